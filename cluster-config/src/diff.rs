//! The difference between two specs as commands: what `raftlb ctl diff`
//! shows and `raftlb ctl apply` commits as one [`Command::Batch`]. Pools
//! whose settings are unchanged get per-backend commands, so the diff reads
//! as what an operator did ("add backend …", "set weight …").

use crate::command::Command;
use crate::spec::{BackendSpec, ClusterSpec, PoolSpec};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// Commands that turn `from` into `to`, in an order that is valid when they
/// are applied together as one batch.
///
/// Discovered backends and discovery status are the cluster's own: left out
/// of the comparison, so a file never adds, removes or fights them (an
/// `UpdatePool` keeps them when applied).
pub fn diff(from: &ClusterSpec, to: &ClusterSpec) -> Vec<Command> {
    let (from, to) = (&without_discovered(from), &without_discovered(to));
    let mut commands = Vec::new();
    for old in &from.listeners {
        if !to.listeners.iter().any(|l| l.name == old.name) {
            commands.push(Command::RemoveListener {
                name: old.name.clone(),
            });
        }
    }
    for old in &from.pools {
        if to.pool(&old.name).is_none() {
            commands.push(Command::RemovePool {
                name: old.name.clone(),
            });
        }
    }
    for new in &to.pools {
        match from.pool(&new.name) {
            None => commands.push(Command::AddPool(new.clone())),
            Some(old) if old != new => pool_changes(old, new, &mut commands),
            Some(_) => {}
        }
    }
    for new in &to.listeners {
        match from.listeners.iter().find(|l| l.name == new.name) {
            None => commands.push(Command::AddListener(new.clone())),
            Some(old) if old != new => commands.push(Command::UpdateListener(new.clone())),
            Some(_) => {}
        }
    }
    if from.gslb != to.gslb {
        commands.push(Command::SetGslb(to.gslb.clone()));
    }
    commands
}

/// A pool's backend commands when only its backends changed (existing ones
/// kept in order, new ones appended), else one `UpdatePool`. Linear in the
/// backends: a 100 000-backend pool diffs at once.
fn pool_changes(old: &PoolSpec, new: &PoolSpec, commands: &mut Vec<Command>) {
    let settings_equal = PoolSpec {
        backends: Vec::new(),
        ..old.clone()
    } == PoolSpec {
        backends: Vec::new(),
        ..new.clone()
    };
    let old_by_address: HashMap<SocketAddr, &BackendSpec> =
        old.backends.iter().map(|b| (b.address, b)).collect();
    let new_addresses: HashSet<SocketAddr> = new.backends.iter().map(|b| b.address).collect();
    let order_kept = new
        .backends
        .iter()
        .filter(|b| old_by_address.contains_key(&b.address))
        .map(|b| b.address)
        .eq(old
            .backends
            .iter()
            .filter(|o| new_addresses.contains(&o.address))
            .map(|o| o.address));
    let appended_only = new
        .backends
        .iter()
        .skip_while(|b| old_by_address.contains_key(&b.address))
        .all(|b| !old_by_address.contains_key(&b.address));
    if !settings_equal || !order_kept || !appended_only {
        commands.push(Command::UpdatePool(new.clone()));
        return;
    }
    let pool = &new.name;
    for o in &old.backends {
        if !new_addresses.contains(&o.address) {
            commands.push(Command::RemoveBackend {
                pool: pool.clone(),
                address: o.address,
            });
        }
    }
    for b in &new.backends {
        match old_by_address.get(&b.address) {
            None => commands.push(Command::AddBackend {
                pool: pool.clone(),
                backend: b.clone(),
            }),
            Some(o) => {
                if o.weight != b.weight {
                    commands.push(Command::SetWeight {
                        pool: pool.clone(),
                        address: b.address,
                        weight: b.weight,
                    });
                }
                if o.state != b.state {
                    commands.push(Command::SetAdminState {
                        pool: pool.clone(),
                        address: b.address,
                        state: b.state,
                    });
                }
            }
        }
    }
}

/// `spec` without discovered backends and with default discovery status.
fn without_discovered(spec: &ClusterSpec) -> ClusterSpec {
    let mut spec = spec.clone();
    for pool in &mut spec.pools {
        pool.backends.retain(|b| !b.discovered);
        pool.discovery_status = Default::default();
    }
    spec
}
