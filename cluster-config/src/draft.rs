//! [`Draft`]: the cluster spec while one log entry is applied, with the
//! indexes that make each listener, pool and backend command cost about the
//! same however large the spec: pools by name, each touched pool's backends
//! by address, and the count of backends. A removed backend stays in place,
//! marked, until the entry is done (or something needs the plain spec):
//! one pass then drops every marked one, keeping the others' order.

use crate::command::Command;
use crate::limits::{MAX_ACL_RULES, MAX_BACKENDS, MAX_BACKENDS_PER_POOL, MAX_LISTENERS, MAX_POOLS};
use crate::spec::{BackendSpec, ClusterSpec, ListenerSpec, PoolSpec};
use crate::state::serves;
use crate::validate::shown;
use std::collections::HashMap;
use std::net::SocketAddr;

/// A spec being changed, with its indexes; see the module documentation.
#[derive(Debug)]
pub(crate) struct Draft {
    spec: ClusterSpec,
    /// Pool name → position in `spec.pools`; built on first use.
    pool_at: Option<HashMap<String, usize>>,
    /// The backends of each pool touched so far, by pool name.
    backends: HashMap<String, Backends>,
    /// Backends over all pools, removed ones not counted; counted on first use.
    total: Option<usize>,
    /// Some pool holds removed backends not yet dropped.
    unsettled: bool,
}

/// One pool's backends by address.
#[derive(Debug)]
struct Backends {
    /// Each backend still in the pool → its position in `backends`.
    at: HashMap<SocketAddr, usize>,
    /// `removed[i]`: the backend at position `i` is gone.
    removed: Vec<bool>,
    removed_count: usize,
}

impl Backends {
    fn of(pool: &PoolSpec) -> Self {
        Backends {
            at: pool
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| (b.address, i))
                .collect(),
            removed: Vec::new(),
            removed_count: 0,
        }
    }
}

impl Draft {
    pub fn new(spec: ClusterSpec) -> Self {
        Draft {
            spec,
            pool_at: None,
            backends: HashMap::new(),
            total: None,
            unsettled: false,
        }
    }

    /// The spec as it stands, removed backends dropped.
    pub fn spec(&mut self) -> &ClusterSpec {
        self.settle();
        &self.spec
    }

    pub fn finish(mut self) -> ClusterSpec {
        self.settle();
        self.spec
    }

    /// Whether `pool` holds `address` (and has not had it removed).
    pub fn has_backend(&mut self, pool: &str, address: SocketAddr) -> bool {
        match self.position(pool) {
            Some(i) => self
                .pool_and_backends(i)
                .is_some_and(|(_, b)| b.at.contains_key(&address)),
            None => false,
        }
    }

    /// The pool called `name`, as it stands but for backends removed in
    /// this entry, which it may still hold (never a discovered one: those
    /// leave with their pool or a discovery update only).
    pub fn pool(&mut self, name: &str) -> Option<&PoolSpec> {
        let i = self.position(name)?;
        self.spec.pools.get(i)
    }

    /// Whether `pool` holds `address` as a discovered backend.
    pub fn is_discovered(&mut self, pool: &str, address: SocketAddr) -> bool {
        let Some(i) = self.position(pool) else {
            return false;
        };
        let Some((spec, backends)) = self.pool_and_backends(i) else {
            return false;
        };
        let at = backends.at.get(&address).copied();
        at.and_then(|at| spec.backends.get(at))
            .is_some_and(|b| b.discovered)
    }

    /// Applies `command` on its own: refused, with nothing changed, if the
    /// result would break one of the state's invariants. Only what the
    /// command touches is checked (the rest kept them already).
    pub fn apply_alone(&mut self, command: Command) -> Result<(), String> {
        self.admit(&command)?;
        self.change(command)
    }

    /// Applies one command of a batch: only its own failures (a missing
    /// name, a duplicate) refuse it; the batch's result is checked whole.
    /// On failure, the draft may be half changed: batches work on a copy.
    pub fn change(&mut self, command: Command) -> Result<(), String> {
        match command {
            Command::Bootstrap(seed) => {
                if !self.spec.listeners.is_empty() || !self.spec.pools.is_empty() {
                    return Err("bootstrap must be the first command of a cluster".to_string());
                }
                *self = Draft::new(seed);
            }
            Command::AddListener(listener) => {
                if self.listener_position(&listener.name).is_some() {
                    return Err(format!("listener \"{}\" already exists", listener.name));
                }
                self.spec.listeners.push(listener);
            }
            Command::UpdateListener(listener) => {
                let i = self
                    .listener_position(&listener.name)
                    .ok_or_else(|| no_listener(&listener.name))?;
                self.spec.listeners[i] = listener;
            }
            Command::RemoveListener { name } => {
                let i = self.listener_position(&name).ok_or_else(|| no_listener(&name))?;
                self.spec.listeners.remove(i);
            }
            Command::SetClientLimits { listener, limits } => {
                let i = self
                    .listener_position(&listener)
                    .ok_or_else(|| no_listener(&listener))?;
                self.spec.listeners[i].limits = limits;
            }
            Command::ChangeAcl { listener, change } => {
                let i = self
                    .listener_position(&listener)
                    .ok_or_else(|| no_listener(&listener))?;
                let rules = crate::acl::changed(&self.spec.listeners[i].acl, &change);
                if rules.len() > MAX_ACL_RULES {
                    return Err(format!(
                        "listener \"{listener}\" would have {} ACL rules, more than the {MAX_ACL_RULES} a listener may",
                        rules.len()
                    ));
                }
                self.spec.listeners[i].acl = rules;
            }
            Command::AddPool(pool) => self.add_pool(pool)?,
            Command::UpdatePool(pool) => {
                let i = self.position(&pool.name).ok_or_else(|| no_pool(&pool.name))?;
                let (before, after) = (self.live(i), pool.backends.len());
                self.backends.remove(&pool.name);
                self.spec.pools[i] = pool;
                self.total = self.total.map(|n| n.saturating_sub(before) + after);
            }
            Command::RemovePool { name } => {
                let i = self.position(&name).ok_or_else(|| no_pool(&name))?;
                let live = self.live(i);
                self.spec.pools.remove(i);
                self.backends.remove(&name);
                if let Some(at) = &mut self.pool_at {
                    at.remove(&name);
                    at.values_mut().filter(|p| **p > i).for_each(|p| *p -= 1);
                }
                self.total = self.total.map(|n| n.saturating_sub(live));
            }
            Command::AddBackend { pool, backend } => self.add_backend(&pool, backend)?,
            Command::RemoveBackend { pool, address } => self.remove_backend(&pool, address)?,
            Command::SetWeight {
                pool,
                address,
                weight,
            } => self.backend(&pool, address)?.weight = weight,
            Command::SetAdminState { pool, address, state } => self.backend(&pool, address)?.state = state,
            Command::Batch(commands) => {
                for command in commands {
                    self.change(command)?;
                }
            }
            Command::SetGslb(gslb) => {
                if let Some(g) = &gslb
                    && let Some(l) = self
                        .spec
                        .listeners
                        .iter()
                        .find(|l| crate::state::gslb_clash(g, l))
                {
                    return Err(format!(
                        "[gslb] on {} conflicts with listener \"{}\" on {}",
                        g.bind, l.name, l.bind
                    ));
                }
                self.spec.gslb = gslb;
            }
            _ => return Err("this command changes no listener, pool or backend".to_string()),
        }
        Ok(())
    }

    /// Whether `command` alone keeps the invariants `change` does not
    /// check. Missing names and duplicates are left to `change`, whose
    /// messages they keep.
    fn admit(&mut self, command: &Command) -> Result<(), String> {
        match command {
            Command::AddListener(l) if self.listener_position(&l.name).is_none() => {
                if self.spec.listeners.len() >= MAX_LISTENERS {
                    return Err(format!(
                        "the cluster has {MAX_LISTENERS} listeners, the most it may"
                    ));
                }
                self.listener_fits(l, None)
            }
            Command::UpdateListener(l) => match self.listener_position(&l.name) {
                Some(i) => self.listener_fits(l, Some(i)),
                None => Ok(()),
            },
            Command::AddPool(p) if self.position(&p.name).is_none() => {
                if self.spec.pools.len() >= MAX_POOLS {
                    return Err(format!("the cluster has {MAX_POOLS} pools, the most it may"));
                }
                self.backends_fit(0, p.backends.len())
            }
            Command::UpdatePool(p) => {
                let Some(i) = self.position(&p.name) else {
                    return Ok(());
                };
                let live = self.live(i);
                self.backends_fit(live, p.backends.len())?;
                let mut users = self
                    .spec
                    .listeners
                    .iter()
                    .filter(|l| l.pools().any(|n| n == p.name));
                users.try_for_each(|l| serves(l, p))
            }
            Command::RemovePool { name } if self.position(name).is_some() => {
                match self.spec.listeners.iter().find(|l| l.pools().any(|n| n == name)) {
                    Some(l) => Err(format!(
                        "listener \"{}\" uses pool \"{name}\", which does not exist",
                        l.name
                    )),
                    None => Ok(()),
                }
            }
            Command::AddBackend { pool, backend } => {
                let Some((spec, backends)) = self.position(pool).and_then(|i| self.pool_and_backends(i))
                else {
                    return Ok(());
                };
                if backends.at.contains_key(&backend.address) {
                    return Ok(());
                }
                if backends.at.len() >= MAX_BACKENDS_PER_POOL {
                    return Err(format!(
                        "pool \"{}\" has {MAX_BACKENDS_PER_POOL} backends, the most a pool may",
                        spec.name
                    ));
                }
                self.backends_fit(0, 1)
            }
            Command::RemoveBackend { pool, address } => {
                match self.position(pool).and_then(|i| self.pool_and_backends(i)) {
                    Some((spec, backends))
                        if backends.at.contains_key(address)
                            && backends.at.len() == 1
                            && spec.discovery.is_none() =>
                    {
                        Err(format!("pool \"{}\" would have no backend", spec.name))
                    }
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// A listener's pools exist and it can serve them; its socket is free.
    fn listener_fits(&mut self, l: &ListenerSpec, replaces: Option<usize>) -> Result<(), String> {
        for name in l.pools() {
            let pool = self.position(name).and_then(|i| self.spec.pools.get(i));
            let pool = pool.ok_or_else(|| {
                format!(
                    "listener \"{}\" uses pool \"{}\", which does not exist",
                    l.name,
                    shown(name)
                )
            })?;
            serves(l, pool)?;
        }
        let others = self
            .spec
            .listeners
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != replaces);
        match others.map(|(_, o)| o).find(|o| l.overlaps(o)) {
            Some(other) => Err(format!(
                "listener \"{}\" on {} conflicts with listener \"{}\" on {}",
                l.name, l.bind, other.name, other.bind
            )),
            None => Ok(()),
        }
    }

    /// Whether the cluster may hold `added` backends in place of `removed`.
    fn backends_fit(&mut self, removed: usize, added: usize) -> Result<(), String> {
        let total = self.total();
        if total.saturating_sub(removed).saturating_add(added) > MAX_BACKENDS {
            return Err(format!(
                "the cluster would have more than the {MAX_BACKENDS} backends it may"
            ));
        }
        Ok(())
    }

    fn add_pool(&mut self, pool: PoolSpec) -> Result<(), String> {
        if self.position(&pool.name).is_some() {
            return Err(format!("pool \"{}\" already exists", pool.name));
        }
        self.total = self.total.map(|n| n + pool.backends.len());
        if let Some(at) = &mut self.pool_at {
            at.insert(pool.name.clone(), self.spec.pools.len());
        }
        self.spec.pools.push(pool);
        Ok(())
    }

    fn add_backend(&mut self, pool: &str, backend: BackendSpec) -> Result<(), String> {
        let i = self.position(pool).ok_or_else(|| no_pool(pool))?;
        let (spec, backends) = self.pool_and_backends(i).ok_or_else(|| no_pool(pool))?;
        if backends.at.contains_key(&backend.address) {
            return Err(format!(
                "backend {} is already in pool \"{}\"",
                backend.address, spec.name
            ));
        }
        backends.at.insert(backend.address, spec.backends.len());
        spec.backends.push(backend);
        self.total = self.total.map(|n| n + 1);
        Ok(())
    }

    fn remove_backend(&mut self, pool: &str, address: SocketAddr) -> Result<(), String> {
        let i = self.position(pool).ok_or_else(|| no_pool(pool))?;
        let (spec, backends) = self.pool_and_backends(i).ok_or_else(|| no_pool(pool))?;
        let at = backends
            .at
            .remove(&address)
            .ok_or_else(|| no_backend(&spec.name, address))?;
        if backends.removed.len() <= at {
            backends.removed.resize(spec.backends.len(), false);
        }
        if let Some(removed) = backends.removed.get_mut(at) {
            *removed = true;
        }
        backends.removed_count += 1;
        self.unsettled = true;
        self.total = self.total.map(|n| n.saturating_sub(1));
        Ok(())
    }

    fn backend(&mut self, pool: &str, address: SocketAddr) -> Result<&mut BackendSpec, String> {
        let i = self.position(pool).ok_or_else(|| no_pool(pool))?;
        let (spec, backends) = self.pool_and_backends(i).ok_or_else(|| no_pool(pool))?;
        let missing = no_backend(&spec.name, address);
        let at = backends.at.get(&address).copied();
        at.and_then(|at| spec.backends.get_mut(at)).ok_or(missing)
    }

    fn listener_position(&self, name: &str) -> Option<usize> {
        self.spec.listeners.iter().position(|l| l.name == name)
    }

    /// The position of the pool called `name` (the index is checked
    /// against the pool it points at, so a slip can never name another).
    fn position(&mut self, name: &str) -> Option<usize> {
        let pools = &self.spec.pools;
        let at = self.pool_at.get_or_insert_with(|| {
            pools
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i))
                .collect()
        });
        at.get(name)
            .copied()
            .filter(|i| pools.get(*i).is_some_and(|p| p.name == name))
    }

    /// The pool at `i` and its backends' index (built on first use).
    fn pool_and_backends(&mut self, i: usize) -> Option<(&mut PoolSpec, &mut Backends)> {
        let pool = self.spec.pools.get_mut(i)?;
        let backends = self
            .backends
            .entry(pool.name.clone())
            .or_insert_with(|| Backends::of(pool));
        Some((pool, backends))
    }

    /// Backends in the pool at `i`, removed ones not counted.
    fn live(&self, i: usize) -> usize {
        self.spec.pools.get(i).map_or(0, |pool| {
            let removed = self.backends.get(&pool.name).map_or(0, |b| b.removed_count);
            pool.backends.len().saturating_sub(removed)
        })
    }

    fn total(&mut self) -> usize {
        let removed: usize = self.backends.values().map(|b| b.removed_count).sum();
        *self
            .total
            .get_or_insert_with(|| self.spec.backend_count().saturating_sub(removed))
    }

    /// Drops every removed backend, in one pass over each pool concerned.
    fn settle(&mut self) {
        if !self.unsettled {
            return;
        }
        for pool in &mut self.spec.pools {
            let Some(backends) = self.backends.get(&pool.name) else {
                continue;
            };
            if backends.removed_count == 0 {
                continue;
            }
            let mut removed = backends.removed.iter().copied();
            pool.backends.retain(|_| !removed.next().unwrap_or(false));
            // Positions have moved: the index is rebuilt if needed again.
            self.backends.remove(&pool.name);
        }
        self.unsettled = false;
    }
}

fn no_listener(name: &str) -> String {
    format!("no listener named \"{}\"", shown(name))
}

fn no_pool(name: &str) -> String {
    format!("no pool named \"{}\"", shown(name))
}

fn no_backend(pool: &str, address: SocketAddr) -> String {
    format!("no backend {address} in pool \"{}\"", shown(pool))
}
