//! Stateless validation of typed values: the checks the file parser applies
//! to what an operator wrote, applied to a [`Command`] however it arrived
//! (admin API, Raft log replay). The file parser runs [`cluster`] on what it
//! built, so a file that parses seeds a cluster that `apply` accepts.
//!
//! Errors name the thing and say why: `listener "web": max_header_bytes 100
//! is below 8192`. The leaf checks here (names, durations, tokens, paths)
//! are shared with the file parser, which adds the line and key path.
//! `listener.rs` holds the listener and route checks, `pool.rs` the pool,
//! health, sticky and TLS ones.

use crate::command::Command;
use crate::limits::{
    MAX_BACKEND_CONNECTIONS, MAX_BACKENDS, MAX_BATCH_COMMANDS, MAX_DURATION, MAX_ENTRY_REGEXES,
    MAX_LISTENERS, MAX_NAME_LEN, MAX_NESTING, MAX_NODE_ID, MAX_PEM_BYTES, MAX_POOLS, MAX_TEXT_BYTES,
    MAX_WEIGHT,
};
use crate::spec::{BackendSpec, ClusterSpec, ListenerSpec, PoolSpec};
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

mod discovery;
mod listener;
mod pool;

pub(crate) use discovery::dns_name;
pub(crate) use listener::{host, http_path, path_regex, pool_or_routes, route_method, token, token_value};
pub(crate) use pool::{backends, cookie_path, probe_path, probe_token};

/// Why a value is refused, in words that name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Everything about `command` that can be checked without the state; see
/// [`Command::validate`].
pub fn command(command: &Command) -> Result<(), Invalid> {
    shape(command)?;
    contents(command).map_err(Invalid)
}

/// A whole cluster spec as a `Bootstrap` seeds it: counts, every listener
/// and pool, and the state's invariants ([`check`](crate::state::check)).
pub fn cluster(spec: &ClusterSpec) -> Result<(), Invalid> {
    cluster_contents(spec).map_err(Invalid)
}

/// One listener's values (not whether its pools exist: that is the state's).
pub fn listener(listener: &ListenerSpec) -> Result<(), Invalid> {
    listener::listener(listener).map_err(Invalid)
}

/// One pool's values, its backends included.
pub fn pool(pool: &PoolSpec) -> Result<(), Invalid> {
    pool::pool(pool).map_err(Invalid)
}

/// How deep `Batch` and `Independent` nest, how many commands they hold
/// in all, and how many route regexes (each compiled to be validated) the
/// entry carries; for `Independent`, what `apply` checks before taking
/// each command on its own.
pub(crate) fn shape(command: &Command) -> Result<(), Invalid> {
    let mut tally = Tally::default();
    tally.count(command, 0).map_err(Invalid)
}

/// What one entry holds, counted before any of it is checked further.
#[derive(Default)]
struct Tally {
    commands: usize,
    regexes: usize,
}

impl Tally {
    fn count(&mut self, command: &Command, depth: usize) -> Result<(), String> {
        let listeners = match command {
            Command::Bootstrap(spec) => spec.listeners.as_slice(),
            Command::AddListener(l) | Command::UpdateListener(l) => std::slice::from_ref(l),
            Command::Batch(commands) | Command::Independent(commands) => {
                return self.count_list(commands, depth);
            }
            _ => &[],
        };
        let regexes = listeners
            .iter()
            .flat_map(|l| &l.routes)
            .filter(|r| r.matches.path_regex.is_some());
        self.regexes = self.regexes.saturating_add(regexes.count());
        if self.regexes > MAX_ENTRY_REGEXES {
            return Err(format!(
                "one entry carries at most {MAX_ENTRY_REGEXES} route regexes"
            ));
        }
        Ok(())
    }

    fn count_list(&mut self, commands: &[Command], depth: usize) -> Result<(), String> {
        if depth == MAX_NESTING {
            return Err(format!(
                "batches nest at most {MAX_NESTING} deep (an independent group of batches)"
            ));
        }
        self.commands = self.commands.saturating_add(commands.len());
        if self.commands > MAX_BATCH_COMMANDS {
            return Err(format!(
                "one entry holds at most {MAX_BATCH_COMMANDS} commands, nested ones included"
            ));
        }
        commands.iter().try_for_each(|c| self.count(c, depth + 1))
    }
}

/// The values of one command; nested ones are checked whole (`shape` has
/// bounded their depth).
fn contents(command: &Command) -> Result<(), String> {
    match command {
        Command::Bootstrap(spec) => cluster_contents(spec),
        Command::AddListener(l) | Command::UpdateListener(l) => listener::listener(l),
        Command::SetClientLimits { listener: l, limits } => {
            name(l).map_err(|why| format!("listener: {why}"))?;
            limits.check().map_err(|why| format!("listener \"{l}\": {why}"))
        }
        Command::ChangeAcl { listener: l, change } => {
            name(l).map_err(|why| format!("listener: {why}"))?;
            listener::acl_change(change).map_err(|why| format!("listener \"{l}\": {why}"))
        }
        Command::AddPool(p) if p.backends.iter().any(|b| b.discovered) => Err(format!(
            "pool \"{}\": a new pool has no discovered backend (discovery adds them)",
            shown(&p.name)
        )),
        // An update's discovered backends are replaced by the pool's own
        // (`discovery::keeps_discovered`): only its static ones count.
        Command::UpdatePool(p) if p.backends.iter().any(|b| b.discovered) => {
            let mut p = p.clone();
            p.backends.retain(|b| !b.discovered);
            pool::pool(&p)
        }
        Command::AddPool(p) | Command::UpdatePool(p) => pool::pool(p),
        Command::AddBackend { pool, backend: b } if b.discovered => Err(format!(
            "{}: discovered backends are set by the pool's discovery only",
            in_pool(pool, b.address)
        )),
        Command::AddBackend { pool, backend: b } => backend(pool, b),
        Command::SetDiscovered(update) => discovery::update(update),
        Command::SetWeight {
            pool,
            address,
            weight,
        } => in_range(weight, 1, MAX_WEIGHT)
            .map_err(|why| format!("{}: weight {why}", in_pool(pool, *address))),
        Command::Batch(commands) => commands.iter().try_for_each(|c| {
            batchable(c)?;
            contents(c)
        }),
        Command::Independent(commands) => commands.iter().try_for_each(contents),
        Command::AssignVip { address, owner } => {
            vip_address(*address)?;
            owner.map_or(Ok(()), node_id)
        }
        Command::PutCertificate { name: n, certificate } => {
            name(n).map_err(|why| format!("certificate: {why}"))?;
            for (what, pem) in [("chain", &certificate.chain_pem), ("key", &certificate.key_pem)] {
                if pem.is_empty() || pem.len() > MAX_PEM_BYTES {
                    return Err(format!(
                        "certificate \"{n}\": the {what} PEM is {} bytes (expected 1 to {MAX_PEM_BYTES})",
                        pem.len()
                    ));
                }
            }
            Ok(())
        }
        Command::ReportHealth { node, .. } => node_id(*node),
        Command::SetGslb(Some(gslb)) => gslb.check().map_err(|why| format!("[gslb]: {why}")),
        Command::SetSiteHealth { name: n, site, .. } => {
            crate::gslb::dns_name(n).map_err(|why| format!("GSLB name: {why}"))?;
            name(site).map_err(|why| format!("GSLB site: {why}"))
        }
        Command::SetClusterVersion(version) if *version < 2 => Err(format!(
            "cluster version {version}: the first version that can be set is 2"
        )),
        Command::SetClusterVersion(_)
        | Command::RemoveListener { .. }
        | Command::RemovePool { .. }
        | Command::RemoveBackend { .. }
        | Command::SetAdminState { .. }
        | Command::Sticky(_)
        | Command::SetStickySecret(_)
        | Command::RemoveCertificate { .. }
        | Command::SetGslb(None) => Ok(()),
    }
}

/// A batch changes listeners, pools and backends only: anything else is
/// applied on its own, and an `Independent` group may half-apply.
fn batchable(command: &Command) -> Result<(), String> {
    let what = match command {
        Command::Independent(_) => "independent commands",
        Command::AssignVip { .. } => "a VIP assignment",
        Command::Sticky(_) => "a sticky-session change",
        Command::SetStickySecret(_) => "the sticky-cookie secret",
        Command::PutCertificate { .. } | Command::RemoveCertificate { .. } => "a certificate change",
        Command::ReportHealth { .. } => "a health report",
        Command::SetSiteHealth { .. } => "a GSLB site verdict",
        Command::SetClusterVersion(_) => "the cluster version",
        Command::SetDiscovered(_) => "a discovery update",
        _ => return Ok(()),
    };
    Err(format!("{what} cannot be part of an atomic batch"))
}

fn cluster_contents(spec: &ClusterSpec) -> Result<(), String> {
    counts(spec)?;
    spec.listeners.iter().try_for_each(listener::listener)?;
    spec.pools.iter().try_for_each(pool::pool)?;
    if let Some(gslb) = &spec.gslb {
        gslb.check().map_err(|why| format!("[gslb]: {why}"))?;
    }
    crate::state::check(spec)
}

/// Listeners, pools and backends within the cluster's limits.
pub(crate) fn counts(spec: &ClusterSpec) -> Result<(), String> {
    for (what, count, max) in [
        ("listeners", spec.listeners.len(), MAX_LISTENERS),
        ("pools", spec.pools.len(), MAX_POOLS),
        ("backends", spec.backend_count(), MAX_BACKENDS),
    ] {
        if count > max {
            return Err(format!(
                "{count} {what} are more than the {max} a cluster may have"
            ));
        }
    }
    Ok(())
}

/// One backend of `pool`.
pub(crate) fn backend(pool: &str, backend: &BackendSpec) -> Result<(), String> {
    in_range(&backend.weight, 1, MAX_WEIGHT)
        .map_err(|why| format!("{}: weight {why}", in_pool(pool, backend.address)))?;
    match backend.max_connections {
        Some(n) => in_range(&n, 0, MAX_BACKEND_CONNECTIONS)
            .map_err(|why| format!("{}: max_connections {why}", in_pool(pool, backend.address))),
        None => Ok(()),
    }
}

fn in_pool(pool: &str, address: SocketAddr) -> String {
    format!("pool \"{}\": backend {address}", shown(pool))
}

/// A VIP as the file accepts one: a unicast address.
fn vip_address(address: IpAddr) -> Result<(), String> {
    if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
        return Err(format!(
            "VIP {address}: a VIP is a unicast address of the interface's subnet"
        ));
    }
    Ok(())
}

fn node_id(node: u64) -> Result<(), String> {
    in_range(&node, 1, MAX_NODE_ID).map_err(|why| format!("node id {why}"))
}

/// Names are identifiers operators type in commands: `[A-Za-z0-9_.-]{1,64}`.
pub(crate) fn name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars {
        return Err(format!(
            "invalid name \"{}\": use 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.'",
            shown(name)
        ));
    }
    Ok(())
}

/// A duration the file could have written: more than zero (unless `zero`
/// is allowed, meaning "off") and at most [`MAX_DURATION`].
pub(crate) fn duration(d: Duration, zero_allowed: bool) -> Result<(), String> {
    if d.is_zero() && !zero_allowed {
        return Err("must be greater than zero".to_string());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{} is longer than the longest allowed, {}",
            crate::duration::format(d),
            crate::duration::format(MAX_DURATION)
        ));
    }
    Ok(())
}

/// `key`, a duration: `idle_timeout must be greater than zero`.
fn timeout(key: &str, d: Duration, zero_allowed: bool) -> Result<(), String> {
    duration(d, zero_allowed).map_err(|why| format!("{key} {why}"))
}

/// `value` in `min..=max`, or why not (`100 is below 8192`).
pub(crate) fn in_range<T: PartialOrd + Display>(value: &T, min: T, max: T) -> Result<(), String> {
    if *value < min {
        Err(format!("{value} is below {min}"))
    } else if *value > max {
        Err(format!("{value} is above {max}"))
    } else {
        Ok(())
    }
}

/// `key`, a number: `max_header_bytes 100 is below 8192`.
fn number<T: PartialOrd + Display>(key: &str, value: T, min: T, max: T) -> Result<(), String> {
    in_range(&value, min, max).map_err(|why| format!("{key} {why}"))
}

/// Free text bounded in length: what ends up in requests and headers.
pub(crate) fn text_len(what: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "{what} of {} bytes is longer than {MAX_TEXT_BYTES}",
            text.len()
        ));
    }
    Ok(())
}

/// `text` as an error message shows it: cut after 64 characters, so a
/// huge value does not make a huge message.
pub(crate) fn shown(text: &str) -> String {
    match text.char_indices().nth(MAX_NAME_LEN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
