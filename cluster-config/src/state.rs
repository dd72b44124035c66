//! [`ClusterState`]: the replicated state and its deterministic
//! [`apply`](ClusterState::apply). Applying is a pure function of the state
//! and the command: no clock, no randomness, no I/O, so every node that
//! applies the same log holds the same state. A command is checked against
//! the state's invariants before it takes effect and rejected whole if it
//! would break one.

use crate::certificate::Certificate;
use crate::command::{Command, Outcome};
use crate::health::HealthReports;
use crate::spec::{BackendSpec, ClusterSpec, ListenerSpec, PoolSpec, binds_overlap};
use crate::sticky::StickySecret;
use crate::sticky_table::StickyTables;
use crate::validate::{self, shown};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// Everything the cluster agrees on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Set by the first [`Command::Bootstrap`]; later ones are refused even
    /// if every listener and pool has since been removed.
    bootstrapped: bool,
    spec: ClusterSpec,
    /// Which node owns each `placement = "spread"` VIP.
    vip_owners: BTreeMap<IpAddr, u64>,
    /// What `cookie` sticky sessions are authenticated with.
    sticky_secret: Option<StickySecret>,
    /// TLS certificates by name, for `https` listeners.
    certificates: BTreeMap<String, Certificate>,
    /// Each node's last active-check verdict on each backend.
    health: HealthReports,
}

impl ClusterState {
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The node a spread VIP is assigned to.
    pub fn vip_owner(&self, address: IpAddr) -> Option<u64> {
        self.vip_owners.get(&address).copied()
    }

    /// Every spread VIP's owner.
    pub fn vip_owners(&self) -> &BTreeMap<IpAddr, u64> {
        &self.vip_owners
    }

    /// The secret `cookie` sticky sessions are authenticated with, once the
    /// first leader has set it.
    pub fn sticky_secret(&self) -> Option<&StickySecret> {
        self.sticky_secret.as_ref()
    }

    /// TLS certificates by name.
    pub fn certificates(&self) -> &BTreeMap<String, Certificate> {
        &self.certificates
    }

    /// Each node's last active-check verdict on each backend.
    pub fn health(&self) -> &HealthReports {
        &self.health
    }

    /// Whether the cluster has been seeded from a configuration file.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// Applies `command` if the result keeps every invariant; otherwise
    /// leaves the state unchanged and says why. Sticky-table changes are
    /// refused: they need the tables ([`apply_with`](Self::apply_with)).
    pub fn apply(&mut self, command: Command) -> Outcome {
        self.apply_to(command, None)
    }

    /// Applies `command`, sending sticky-table changes to `sticky`.
    pub fn apply_with(&mut self, command: Command, sticky: &StickyTables) -> Outcome {
        self.apply_to(command, Some(sticky))
    }

    fn apply_to(&mut self, command: Command, sticky: Option<&StickyTables>) -> Outcome {
        match command {
            Command::Independent(commands) => {
                return Outcome::Each(commands.into_iter().map(|c| self.apply_to(c, sticky)).collect());
            }
            Command::Sticky(change) => {
                return match sticky {
                    Some(tables) => tables.apply(&self.spec, change),
                    None => Outcome::Rejected("sticky changes need the sticky tables".to_string()),
                };
            }
            Command::PutCertificate { name, certificate } => {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                {
                    return Outcome::Rejected(format!("invalid certificate name \"{name}\""));
                }
                self.certificates.insert(name, certificate);
                return Outcome::Applied;
            }
            Command::RemoveCertificate { name } => {
                return match self.certificates.remove(&name) {
                    Some(_) => Outcome::Applied,
                    None => Outcome::Rejected(format!("no certificate named \"{name}\"")),
                };
            }
            Command::ReportHealth {
                node,
                pool,
                address,
                up,
            } => {
                if self
                    .spec
                    .pool(&pool)
                    .is_none_or(|p| p.backends.iter().all(|b| b.address != address))
                {
                    return Outcome::Rejected(format!("no backend {address} in pool \"{pool}\""));
                }
                self.health.record(&pool, address, node, up);
                return Outcome::Applied;
            }
            Command::SetStickySecret(secret) => {
                if self.sticky_secret.is_some() {
                    return Outcome::Rejected("the sticky-cookie secret is already set".to_string());
                }
                self.sticky_secret = Some(secret);
                return Outcome::Applied;
            }
            _ => {}
        }
        if let Command::AssignVip { address, owner } = command {
            match owner {
                Some(node) => self.vip_owners.insert(address, node),
                None => self.vip_owners.remove(&address),
            };
            return Outcome::Applied;
        }
        if let Command::Bootstrap(_) = &command
            && self.bootstrapped
        {
            return Outcome::Rejected("the cluster is already bootstrapped".to_string());
        }
        let bootstraps = matches!(command, Command::Bootstrap(_));
        let mut next = self.spec.clone();
        let result = change(&mut next, command).and_then(|()| check(&next));
        match result {
            Ok(()) => {
                self.spec = next;
                self.bootstrapped |= bootstraps;
                let spec = &self.spec;
                self.health.retain(|pool, address| {
                    spec.pool(pool)
                        .is_some_and(|p| p.backends.iter().any(|b| b.address == address))
                });
                Outcome::Applied
            }
            Err(reason) => Outcome::Rejected(reason),
        }
    }
}

fn change(spec: &mut ClusterSpec, command: Command) -> Result<(), String> {
    match command {
        Command::Bootstrap(seed) => {
            // Only reachable unbootstrapped (`apply` refuses a second one);
            // inside a batch it would be a second seed.
            if !spec.listeners.is_empty() || !spec.pools.is_empty() {
                return Err("bootstrap must be the first command of a cluster".to_string());
            }
            *spec = seed;
        }
        Command::AddListener(listener) => {
            if spec.listeners.iter().any(|l| l.name == listener.name) {
                return Err(format!("listener \"{}\" already exists", listener.name));
            }
            spec.listeners.push(listener);
        }
        Command::UpdateListener(listener) => {
            let name = listener.name.clone();
            *find(
                &mut spec.listeners,
                |l| l.name == name,
                || format!("no listener named \"{name}\""),
            )? = listener;
        }
        Command::RemoveListener { name } => {
            let before = spec.listeners.len();
            spec.listeners.retain(|l| l.name != name);
            if spec.listeners.len() == before {
                return Err(format!("no listener named \"{name}\""));
            }
        }
        Command::AddPool(pool) => {
            if spec.pools.iter().any(|p| p.name == pool.name) {
                return Err(format!("pool \"{}\" already exists", pool.name));
            }
            spec.pools.push(pool);
        }
        Command::UpdatePool(pool) => {
            let name = pool.name.clone();
            *find(&mut spec.pools, |p| p.name == name, || no_pool(&name))? = pool;
        }
        Command::RemovePool { name } => {
            // A listener still using it fails the final check, which sees the
            // whole batch (a later command may point the listener elsewhere).
            let before = spec.pools.len();
            spec.pools.retain(|p| p.name != name);
            if spec.pools.len() == before {
                return Err(no_pool(&name));
            }
        }
        Command::AddBackend { pool, backend } => {
            let pool = find(&mut spec.pools, |p| p.name == pool, || no_pool(&pool))?;
            if pool.backends.iter().any(|b| b.address == backend.address) {
                return Err(format!(
                    "backend {} is already in pool \"{}\"",
                    backend.address, pool.name
                ));
            }
            pool.backends.push(backend);
        }
        Command::RemoveBackend { pool, address } => {
            let pool = find(&mut spec.pools, |p| p.name == pool, || no_pool(&pool))?;
            let before = pool.backends.len();
            pool.backends.retain(|b| b.address != address);
            if pool.backends.len() == before {
                return Err(no_backend(pool, address));
            }
        }
        Command::SetWeight {
            pool,
            address,
            weight,
        } => backend(spec, &pool, address)?.weight = weight,
        Command::SetAdminState { pool, address, state } => backend(spec, &pool, address)?.state = state,
        Command::Batch(commands) => {
            for command in commands {
                change(spec, command)?;
            }
        }
        Command::Independent(_) => {
            return Err("independent commands cannot be part of an atomic batch".to_string());
        }
        Command::AssignVip { .. }
        | Command::Sticky(_)
        | Command::SetStickySecret(_)
        | Command::PutCertificate { .. }
        | Command::RemoveCertificate { .. }
        | Command::ReportHealth { .. } => {
            return Err(format!("\"{command}\" cannot be part of an atomic batch"));
        }
    }
    Ok(())
}

fn find<T>(
    items: &mut [T],
    matches: impl Fn(&T) -> bool,
    missing: impl FnOnce() -> String,
) -> Result<&mut T, String> {
    items.iter_mut().find(|item| matches(item)).ok_or_else(missing)
}

fn backend<'a>(
    spec: &'a mut ClusterSpec,
    pool: &str,
    address: SocketAddr,
) -> Result<&'a mut BackendSpec, String> {
    let pool = find(&mut spec.pools, |p| p.name == pool, || no_pool(pool))?;
    let missing = no_backend(pool, address);
    pool.backends
        .iter_mut()
        .find(|b| b.address == address)
        .ok_or(missing)
}

fn no_pool(name: &str) -> String {
    format!("no pool named \"{name}\"")
}

fn no_backend(pool: &PoolSpec, address: SocketAddr) -> String {
    format!("no backend {address} in pool \"{}\"", pool.name)
}

/// Whether `listener` can serve `pool`: a TCP or UDP listener sees no
/// header, cookie or path to keep sessions by or to hash.
fn serves(listener: &ListenerSpec, pool: &PoolSpec) -> Result<(), String> {
    if listener.protocol.is_http() {
        return Ok(());
    }
    if let Some(sticky) = &pool.sticky
        && sticky.kind.needs_http()
    {
        return Err(format!(
            "{} listener \"{}\" uses pool \"{}\", whose sticky kind \"{}\" needs HTTP (use kind = \"source_ip\")",
            listener.protocol.name(),
            listener.name,
            pool.name,
            sticky.kind.name()
        ));
    }
    if let Some(key) = pool.algorithm.hash_key(&pool.hash_key)
        && key.needs_http()
    {
        return Err(format!(
            "{} listener \"{}\" uses pool \"{}\", which hashes hash_key = \"{}\" (needs HTTP; use hash_key = \"source_ip\")",
            listener.protocol.name(),
            listener.name,
            pool.name,
            shown(&key.to_string())
        ));
    }
    Ok(())
}

/// The invariants a state must keep (the same ones the file's validation
/// enforces, there with lines and key paths): counts within limits, names
/// unique, pools with valid backends, listeners sending to pools that
/// exist and that they can serve, no two listeners on one socket.
pub fn check(spec: &ClusterSpec) -> Result<(), String> {
    validate::counts(spec)?;
    let mut pools = HashMap::with_capacity(spec.pools.len());
    for pool in &spec.pools {
        if pools.insert(pool.name.as_str(), pool).is_some() {
            return Err(format!("duplicate pool name \"{}\"", pool.name));
        }
        validate::backends(pool)?;
    }
    let mut names = HashSet::new();
    for (i, listener) in spec.listeners.iter().enumerate() {
        if !names.insert(listener.name.as_str()) {
            return Err(format!("duplicate listener name \"{}\"", listener.name));
        }
        validate::pool_or_routes(listener)?;
        for name in listener.pools() {
            let Some(pool) = pools.get(name) else {
                return Err(format!(
                    "listener \"{}\" uses pool \"{}\", which does not exist",
                    listener.name,
                    shown(name)
                ));
            };
            serves(listener, pool)?;
        }
        let clash = spec.listeners[..i]
            .iter()
            .find(|other| binds_overlap((listener.protocol, listener.bind), (other.protocol, other.bind)));
        if let Some(other) = clash {
            return Err(format!(
                "listener \"{}\" on {} conflicts with listener \"{}\" on {}",
                listener.name, listener.bind, other.name, other.bind
            ));
        }
    }
    Ok(())
}
