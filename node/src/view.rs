//! [`ClusterView`]: the immutable picture of the cluster the data plane works
//! from. It is built from a [`ClusterSpec`] and published through an
//! [`ArcSwap`]; a request loads the current view once (no lock, no await) and
//! keeps using that snapshot to its end. Rebuilding the view keeps each
//! backend's live [`Backend`] state (its active-connection count) when the
//! backend is still present, so a new view changes
//! where new work goes without disturbing work in flight.

use crate::balance::{self, Balancer};
use arc_swap::ArcSwap;
use raftlb_config::{AdminState, BackendSpec, ClusterSpec, ListenerSpec, PoolSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The view as the data plane shares it.
pub type SharedView = Arc<ArcSwap<ClusterView>>;

/// Everything the data plane reads to route a connection or request.
#[derive(Debug, Default)]
pub struct ClusterView {
    listeners: HashMap<String, Arc<ListenerView>>,
    pools: HashMap<String, Arc<PoolView>>,
}

/// A listener's settings and the pool it sends to.
#[derive(Debug)]
pub struct ListenerView {
    pub spec: ListenerSpec,
    pub pool: Arc<PoolView>,
}

/// A pool: its backends and the balancer that chooses among them.
#[derive(Debug)]
pub struct PoolView {
    pub spec: PoolSpec,
    /// The backends that take new work (admin state `enabled`), in spec
    /// order; the balancer's indices point into this list.
    pub backends: Vec<Arc<Backend>>,
    /// Live state of every backend in the spec, whatever its admin state,
    /// index for index with `spec.backends`.
    members: Vec<Arc<Backend>>,
    pub balancer: Box<dyn Balancer>,
}

/// One backend's live state, which outlives view rebuilds (its weight and
/// other settings are in the pool's spec, next to it, and may change).
#[derive(Debug)]
pub struct Backend {
    address: SocketAddr,
    /// Open L4 connections plus in-flight L7 requests.
    active: AtomicUsize,
}

impl Backend {
    pub fn new(address: SocketAddr) -> Self {
        Backend {
            address,
            active: AtomicUsize::new(0),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts one connection or request against this backend until the guard drops.
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(self))
    }
}

/// Decrements a backend's active count when dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Backend>);

impl ActiveGuard {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClusterView {
    /// Builds a view of `spec`, reusing live backend state from `previous`
    /// for every (pool, address) pair that survives.
    pub fn build(spec: &ClusterSpec, previous: Option<&ClusterView>) -> ClusterView {
        let pools: HashMap<String, Arc<PoolView>> = spec
            .pools
            .iter()
            .map(|pool| {
                let old = previous.and_then(|v| v.pools.get(&pool.name));
                (
                    pool.name.clone(),
                    Arc::new(PoolView::build(pool, old.map(|p| &**p))),
                )
            })
            .collect();
        let listeners = spec
            .listeners
            .iter()
            .filter_map(|listener| {
                let pool = pools.get(&listener.pool)?;
                let view = ListenerView {
                    spec: listener.clone(),
                    pool: Arc::clone(pool),
                };
                Some((listener.name.clone(), Arc::new(view)))
            })
            .collect();
        ClusterView { listeners, pools }
    }

    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerView>> {
        self.listeners.get(name)
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<PoolView>> {
        self.pools.get(name)
    }
}

impl PoolView {
    fn build(spec: &PoolSpec, previous: Option<&PoolView>) -> PoolView {
        let members: Vec<Arc<Backend>> = spec
            .backends
            .iter()
            .map(|b| {
                let kept = previous.and_then(|p| p.members.iter().find(|old| old.address == b.address));
                kept.map(Arc::clone)
                    .unwrap_or_else(|| Arc::new(Backend::new(b.address)))
            })
            .collect();
        let serving: Vec<(&BackendSpec, &Arc<Backend>)> = spec
            .backends
            .iter()
            .zip(&members)
            .filter(|(b, _)| b.state == AdminState::Enabled)
            .collect();
        let serving_specs: Vec<BackendSpec> = serving.iter().map(|(b, _)| (*b).clone()).collect();
        PoolView {
            spec: spec.clone(),
            backends: serving.iter().map(|(_, live)| Arc::clone(live)).collect(),
            balancer: balance::build(spec.algorithm, &serving_specs),
            members,
        }
    }

    /// Picks a backend not in `tried` (indices into `backends`).
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        self.balancer.pick(&self.backends, tried)
    }
}
