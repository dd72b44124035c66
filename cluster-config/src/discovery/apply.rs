//! How discovery changes the state: a [`DiscoveryUpdate`] replaces one
//! pool's discovered backends, and every other pool or backend command is
//! made to leave them alone (a file's `UpdatePool` keeps the cluster's).

use super::{Discovered, DiscoveryStatus, DiscoveryUpdate};
use crate::command::Command;
use crate::draft::Draft;
use crate::spec::{BackendSpec, PoolSpec};
use crate::validate::shown;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// Applies `update`, read from the entry at log index `index`; returns the
/// backends it took out of the pool (their health reports go too).
pub(crate) fn apply(
    draft: &mut Draft,
    update: DiscoveryUpdate,
    index: u64,
) -> Result<Vec<(String, SocketAddr)>, String> {
    let name = update.pool;
    let Some(pool) = draft.spec().pool(&name) else {
        return Err(format!("no pool named \"{}\"", shown(&name)));
    };
    if pool.discovery.is_none() {
        return Err(format!("pool \"{name}\" has no discovery"));
    }
    let mut new = pool.clone();
    new.discovery_status.last_good_ms = update.last_good_ms;
    new.discovery_status.failure = update.failure;
    let mut removed = Vec::new();
    if let Some(mut set) = update.backends {
        // A static backend of the same address wins: discovery never
        // touches what the operator set.
        let statics = super::static_addresses(pool);
        set.retain(|d| !statics.contains(&d.address));
        set.sort();
        let mut before = discovered(pool);
        before.sort();
        if before != set {
            let old: HashMap<SocketAddr, &BackendSpec> = pool
                .backends
                .iter()
                .filter(|b| b.discovered)
                .map(|b| (b.address, b))
                .collect();
            let kept: HashSet<SocketAddr> = set.iter().map(|d| d.address).collect();
            removed = old
                .keys()
                .filter(|a| !kept.contains(a))
                .map(|a| (name.clone(), *a))
                .collect();
            removed.sort();
            let statics = pool.backends.iter().filter(|b| !b.discovered).cloned();
            let found = set.iter().map(|d| {
                let mut backend = match old.get(&d.address) {
                    // Kept: its admin state and connection limit stay.
                    Some(b) => (*b).clone(),
                    None => BackendSpec::new(d.address),
                };
                backend.weight = d.weight;
                backend.discovered = true;
                backend
            });
            new.backends = statics.chain(found).collect();
            new.discovery_status.changes = new.discovery_status.changes.saturating_add(1);
            new.discovery_status.changed_at = index;
        }
    }
    draft.apply_alone(Command::UpdatePool(new))?;
    Ok(removed)
}

/// A pool's discovered set, as an update names it.
pub fn discovered(pool: &PoolSpec) -> Vec<Discovered> {
    pool.backends
        .iter()
        .filter(|b| b.discovered)
        .map(|b| Discovered {
            address: b.address,
            weight: b.weight,
        })
        .collect()
}

/// `command` as it must apply beside discovery: an `UpdatePool` keeps the
/// pool's discovered backends (while it keeps `discovery`) and its status,
/// whatever it carried; removing a discovered backend or setting its
/// weight is refused (the answers set them).
pub(crate) fn keeps_discovered(draft: &mut Draft, command: Command) -> Result<Command, String> {
    match command {
        Command::UpdatePool(mut pool) => {
            pool.backends.retain(|b| !b.discovered);
            let old = draft.pool(&pool.name).filter(|old| old.discovery.is_some());
            match (old, pool.discovery.is_some()) {
                (Some(old), true) => {
                    let statics: HashSet<SocketAddr> = pool.backends.iter().map(|b| b.address).collect();
                    let found = old
                        .backends
                        .iter()
                        .filter(|b| b.discovered && !statics.contains(&b.address));
                    pool.backends.extend(found.cloned());
                    pool.discovery_status = old.discovery_status.clone();
                }
                _ => pool.discovery_status = DiscoveryStatus::default(),
            }
            Ok(Command::UpdatePool(pool))
        }
        Command::AddPool(mut pool) => {
            pool.discovery_status = DiscoveryStatus::default();
            Ok(Command::AddPool(pool))
        }
        Command::RemoveBackend { pool, address } | Command::SetWeight { pool, address, .. }
            if draft.is_discovered(&pool, address) =>
        {
            Err(format!(
                "backend {address} of pool \"{pool}\" was found by the pool's discovery: the DNS answers add, remove and weigh it"
            ))
        }
        Command::Batch(commands) => commands
            .into_iter()
            .map(|c| keeps_discovered(draft, c))
            .collect::<Result<Vec<_>, _>>()
            .map(Command::Batch),
        other => Ok(other),
    }
}
