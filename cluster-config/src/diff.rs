//! The difference between two specs as commands: what `raftlb ctl diff`
//! shows and `raftlb ctl apply` commits as one [`Command::Batch`]. Pools
//! whose settings are unchanged get per-backend commands, so the diff reads
//! as what an operator did ("add backend …", "set weight …").

use crate::command::Command;
use crate::spec::{ClusterSpec, PoolSpec};

/// Commands that turn `from` into `to`, in an order that is valid when they
/// are applied together as one batch.
pub fn diff(from: &ClusterSpec, to: &ClusterSpec) -> Vec<Command> {
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
    commands
}

fn pool_changes(old: &PoolSpec, new: &PoolSpec, commands: &mut Vec<Command>) {
    let settings_equal = PoolSpec {
        backends: Vec::new(),
        ..old.clone()
    } == PoolSpec {
        backends: Vec::new(),
        ..new.clone()
    };
    let order_kept = new
        .backends
        .iter()
        .filter(|b| old.backends.iter().any(|o| o.address == b.address))
        .map(|b| b.address)
        .eq(old
            .backends
            .iter()
            .filter(|o| new.backends.iter().any(|b| b.address == o.address))
            .map(|o| o.address));
    let appended_only = new
        .backends
        .iter()
        .skip_while(|b| old.backends.iter().any(|o| o.address == b.address))
        .all(|b| !old.backends.iter().any(|o| o.address == b.address));
    if !settings_equal || !order_kept || !appended_only {
        commands.push(Command::UpdatePool(new.clone()));
        return;
    }
    let pool = &new.name;
    for o in &old.backends {
        if !new.backends.iter().any(|b| b.address == o.address) {
            commands.push(Command::RemoveBackend {
                pool: pool.clone(),
                address: o.address,
            });
        }
    }
    for b in &new.backends {
        match old.backends.iter().find(|o| o.address == b.address) {
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
