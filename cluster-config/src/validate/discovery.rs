//! The checks of a pool's `discovery` and of a
//! [`Command::SetDiscovered`](crate::Command::SetDiscovered)'s set.

use super::{in_range, shown, timeout};
use crate::discovery::{DiscoverySpec, DiscoveryUpdate, MAX_DISCOVERED, RecordType};
use crate::limits::MAX_WEIGHT;
use std::collections::HashSet;

/// A DNS name: 1 to 253 bytes of dot-separated labels of 1 to 63 letters,
/// digits, '-' or '_' (SRV names start with `_service._proto`); one
/// trailing dot allowed.
pub(crate) fn dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let labels_ok = bare.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    });
    if bare.is_empty() || bare.len() > 253 || !labels_ok {
        return Err(format!(
            "\"{}\" is not a DNS name (dot-separated labels of 1 to 63 letters, digits, '-' or '_'; at most 253 bytes)",
            shown(name)
        ));
    }
    Ok(())
}

/// Everything a `discovery` holds.
pub(crate) fn spec(d: &DiscoverySpec) -> Result<(), String> {
    dns_name(&d.name).map_err(|why| format!("name {why}"))?;
    match (d.record, d.port) {
        (RecordType::Srv, 0) => {}
        (RecordType::Srv, _) => {
            return Err(
                "port: type = \"SRV\" takes each backend's port from its record; remove port".to_string(),
            );
        }
        (_, 0) => {
            return Err(format!(
                "port: type = \"{}\" needs the backends' port (1 to 65535)",
                d.record.name()
            ));
        }
        _ => {}
    }
    if d.resolvers.len() > DiscoverySpec::MAX_RESOLVERS {
        return Err(format!(
            "resolvers: {} are more than the {} allowed",
            d.resolvers.len(),
            DiscoverySpec::MAX_RESOLVERS
        ));
    }
    if let Some(r) = d
        .resolvers
        .iter()
        .find(|r| r.port() == 0 || r.ip().is_unspecified())
    {
        return Err(format!("resolvers: {r} is not an address a query can be sent to"));
    }
    timeout("interval", d.interval, false)?;
    timeout("min_ttl", d.min_ttl, false)?;
    timeout("nxdomain_hold", d.nxdomain_hold, true)?;
    timeout("timeout", d.timeout, false)
}

/// A leader's update: a set of at most [`MAX_DISCOVERED`] distinct
/// addresses with valid weights.
pub(crate) fn update(u: &DiscoveryUpdate) -> Result<(), String> {
    super::name(&u.pool).map_err(|why| format!("pool: {why}"))?;
    let Some(set) = &u.backends else { return Ok(()) };
    if set.len() > MAX_DISCOVERED {
        return Err(format!(
            "pool \"{}\": {} discovered backends are more than the {MAX_DISCOVERED} a pool may hold",
            u.pool,
            set.len()
        ));
    }
    let mut seen = HashSet::with_capacity(set.len());
    for d in set {
        if !seen.insert(d.address) {
            return Err(format!(
                "pool \"{}\": discovered backend {} is twice in the set",
                u.pool, d.address
            ));
        }
        if d.address.port() == 0 || d.address.ip().is_unspecified() {
            return Err(format!(
                "pool \"{}\": discovered backend {} is not an address",
                u.pool, d.address
            ));
        }
        in_range(&d.weight, 1, MAX_WEIGHT).map_err(|why| {
            format!(
                "pool \"{}\": discovered backend {}: weight {why}",
                u.pool, d.address
            )
        })?;
    }
    Ok(())
}
