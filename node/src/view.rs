//! [`ClusterView`]: the immutable picture of the cluster the data plane works
//! from. It is built from a [`ClusterState`] and published through an
//! [`ArcSwap`]; a request loads the current view once (no lock, no await) and
//! keeps using that snapshot to its end. Rebuilding the view keeps each
//! backend's live [`Backend`] state (its active-connection count) when the
//! backend is still present (and the pool's balancer while its algorithm
//! and enabled backends are unchanged), so a new view changes
//! where new work goes without disturbing work in flight. A pool with a
//! sticky policy carries its [`PoolSticky`], built with the cluster's
//! cookie secret and the node's [`Sticky`] runtime.

use crate::balance::peak_ewma::Latency;
use crate::balance::{self, Balancer, Pick};
use crate::dataplane::admission::{AclTable, ListenerGuard};
use crate::dataplane::l7::route::RouteView;
use crate::health::{self, BackendHealth, PoolRuntime};
use crate::sticky::{PoolSticky, Sticky};
use crate::tls::Certificates;
use crate::tls::backend::BackendConnector;
use arc_swap::ArcSwap;
use raftlb_config::{AdminState, BackendSpec, ClusterState, ListenerSpec, PoolSpec, StickySecret};
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
    certificates: Arc<Certificates>,
    /// What `certificates` was parsed from.
    certificate_source: std::collections::BTreeMap<String, raftlb_config::Certificate>,
}

/// A listener's settings, its routes and the pool it sends the rest to.
#[derive(Debug)]
pub struct ListenerView {
    pub spec: ListenerSpec,
    /// Where requests no route takes go (`None`: they get 404).
    pub pool: Option<Arc<PoolView>>,
    /// HTTP only, in order.
    pub routes: Vec<RouteView>,
    /// Its ACL, rebuilt only when the rules change.
    pub acl: Arc<AclTable>,
    /// Its sources and refusal counts, kept while the listener exists.
    pub guard: Arc<ListenerGuard>,
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
    /// Kept across view rebuilds while the algorithm and the enabled
    /// backends stay (Maglev's table is built once).
    pub balancer: Arc<dyn Balancer>,
    /// The pool's sticky policy at work, if it has one.
    pub sticky: Option<PoolSticky>,
    /// `[pool.tls]`: how to reach the backends over TLS, or why it cannot.
    pub tls: Option<Result<BackendConnector, String>>,
    /// Retry budget, panic and counters, kept while the pool exists.
    pub runtime: Arc<PoolRuntime>,
}

/// The backends one connection or request has tried: the session's backend
/// first, if it has one that may take it, then the balancer's picks.
#[derive(Debug, Default)]
pub struct Attempts {
    tried: Vec<usize>,
    preferred_done: bool,
    made: usize,
    /// The request's key hash for hashing algorithms.
    hash: Option<u64>,
}

impl Attempts {
    /// Attempts for a request whose key hashes to `hash` (see
    /// [`PoolView::request_hash`], [`PoolView::source_hash`]).
    pub fn with_hash(hash: Option<u64>) -> Self {
        Attempts {
            hash,
            ..Attempts::default()
        }
    }
}

/// One backend's live state, which outlives view rebuilds (its weight and
/// other settings are in the pool's spec, next to it, and may change).
#[derive(Debug)]
pub struct Backend {
    address: SocketAddr,
    /// Open L4 connections plus in-flight L7 requests.
    active: AtomicUsize,
    health: BackendHealth,
    latency: Latency,
}

impl Backend {
    pub fn new(address: SocketAddr) -> Self {
        Backend::with_health(address, BackendHealth::default())
    }

    pub fn with_health(address: SocketAddr, health: BackendHealth) -> Self {
        Backend {
            address,
            active: AtomicUsize::new(0),
            health,
            latency: Latency::default(),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Response (L7) or connect (L4) latency, for `peak_ewma`.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// Whether this node may send new work here: every balancer skips a
    /// backend that is not (health checks and outlier ejection decide).
    pub fn available(&self) -> bool {
        self.health.available()
    }

    pub fn health(&self) -> &BackendHealth {
        &self.health
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
    /// Builds a view of `state`, reusing live backend state from `previous`
    /// for every (pool, address) pair that survives. Sticky pools use
    /// `sticky` (without it they are served without stickiness).
    /// A backend this node (`node`) last reported down starts down.
    pub fn build(
        state: &ClusterState,
        node: u64,
        sticky: Option<&Arc<Sticky>>,
        previous: Option<&ClusterView>,
    ) -> ClusterView {
        let spec = state.spec();
        let pools: HashMap<String, Arc<PoolView>> = spec
            .pools
            .iter()
            .map(|pool| {
                let old = previous.and_then(|v| v.pools.get(&pool.name));
                let sticky = sticky.map(|s| (s, state.sticky_secret()));
                (
                    pool.name.clone(),
                    Arc::new(PoolView::build(pool, old.map(|p| &**p), sticky, |address| {
                        pool.health.check.is_some()
                            && state.health().verdict(&pool.name, address, node) == Some(false)
                    })),
                )
            })
            .collect();
        let listeners = spec
            .listeners
            .iter()
            .filter_map(|listener| {
                let pool = match &listener.pool {
                    Some(name) => Some(Arc::clone(pools.get(name)?)),
                    None => None,
                };
                let routes = listener
                    .routes
                    .iter()
                    .map(|route| RouteView::build(route, &pools))
                    .collect::<Option<Vec<_>>>()?;
                let old = previous.and_then(|v| v.listeners.get(&listener.name));
                let acl = match old {
                    Some(old) if old.spec.acl == listener.acl => Arc::clone(&old.acl),
                    _ => Arc::new(AclTable::build(&listener.acl)),
                };
                let view = ListenerView {
                    spec: listener.clone(),
                    pool,
                    routes,
                    acl,
                    guard: old.map_or_else(Default::default, |old| Arc::clone(&old.guard)),
                };
                Some((listener.name.clone(), Arc::new(view)))
            })
            .collect();
        // Certificates change rarely: parse them again only when they did.
        let certificates = match previous {
            Some(p) if p.certificate_source == *state.certificates() => Arc::clone(&p.certificates),
            _ => Arc::new(Certificates::build(state.certificates())),
        };
        ClusterView {
            listeners,
            pools,
            certificates,
            certificate_source: state.certificates().clone(),
        }
    }

    /// The certificates `https` listeners serve.
    pub fn certificates(&self) -> &Certificates {
        &self.certificates
    }

    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerView>> {
        self.listeners.get(name)
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<PoolView>> {
        self.pools.get(name)
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<PoolView>> {
        self.pools.values()
    }

    pub fn listeners(&self) -> impl Iterator<Item = &Arc<ListenerView>> {
        self.listeners.values()
    }
}

impl PoolView {
    /// `reported_down`: whether this node last committed the backend at
    /// that address down (it then starts down).
    fn build(
        spec: &PoolSpec,
        previous: Option<&PoolView>,
        sticky: Option<(&Arc<Sticky>, Option<&StickySecret>)>,
        reported_down: impl Fn(SocketAddr) -> bool,
    ) -> PoolView {
        let members: Vec<Arc<Backend>> = spec
            .backends
            .iter()
            .map(|b| {
                let kept = previous.and_then(|p| p.members.iter().find(|old| old.address == b.address));
                kept.map(Arc::clone).unwrap_or_else(|| {
                    // Added to a running pool: slow start; at start-up: as last reported.
                    let health = match (previous, reported_down(b.address)) {
                        (_, true) => BackendHealth::starting_down(),
                        (Some(_), false) => BackendHealth::ramping(),
                        (None, false) => BackendHealth::default(),
                    };
                    Arc::new(Backend::with_health(b.address, health))
                })
            })
            .collect();
        let serving: Vec<(&BackendSpec, &Arc<Backend>)> = spec
            .backends
            .iter()
            .zip(&members)
            .filter(|(b, _)| b.state == AdminState::Enabled)
            .collect();
        let serving_specs: Vec<BackendSpec> = serving.iter().map(|(b, _)| (*b).clone()).collect();
        let sticky = spec
            .sticky
            .clone()
            .zip(sticky)
            .map(|(policy, (runtime, secret))| {
                PoolSticky::new(
                    policy,
                    &spec.name,
                    runtime,
                    secret,
                    spec.backends.iter().map(|b| b.address),
                )
            });
        // The connector (and CA file) is kept while the settings stay.
        let tls = match (previous, &spec.tls) {
            (Some(p), Some(settings))
                if p.spec.tls.as_ref() == Some(settings)
                    && p.spec.backend_protocol == spec.backend_protocol =>
            {
                p.tls.clone()
            }
            (_, Some(settings)) => {
                let built = BackendConnector::build(settings, spec.backend_protocol);
                if let Err(e) = &built {
                    tracing::error!(pool = %spec.name, error = %e, "TLS to backends unavailable");
                }
                Some(built)
            }
            (_, None) => None,
        };
        let balancer = match previous {
            Some(p)
                if p.spec.algorithm == spec.algorithm
                    && p.spec
                        .backends
                        .iter()
                        .filter(|b| b.state == AdminState::Enabled)
                        .eq(&serving_specs) =>
            {
                Arc::clone(&p.balancer)
            }
            _ => balance::build(spec.algorithm, &serving_specs),
        };
        PoolView {
            spec: spec.clone(),
            backends: serving.iter().map(|(_, live)| Arc::clone(live)).collect(),
            balancer,
            members,
            sticky,
            tls,
            runtime: previous.map_or_else(Default::default, |p| Arc::clone(&p.runtime)),
        }
    }

    /// Every backend of the spec, whatever its admin state, in spec order.
    pub fn members(&self) -> &[Arc<Backend>] {
        &self.members
    }

    /// Picks an available backend `pick` allows (indices into `backends`).
    pub fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        self.balancer.pick(&self.backends, pick)
    }

    /// Whether `address` may still take its sticky sessions: it is in the
    /// pool and enabled or draining (drain keeps sessions until they
    /// expire; maintenance moves them).
    pub fn keeps_sessions(&self, address: SocketAddr) -> bool {
        self.sticky_member(address).is_some()
    }

    fn sticky_member(&self, address: SocketAddr) -> Option<&Arc<Backend>> {
        self.spec
            .backends
            .iter()
            .zip(&self.members)
            .find(|(spec, _)| spec.address == address && spec.state != AdminState::Maintenance)
            .map(|(_, live)| live)
    }

    /// Whether [`next_backend`](Self::next_backend) could still offer an
    /// available backend this work has not tried.
    pub fn can_try_another(&self, attempts: &Attempts) -> bool {
        attempts.made < self.spec.max_connect_attempts as usize
            && (0..self.backends.len()).any(|i| !attempts.tried.contains(&i) && self.backends[i].available())
    }

    /// The next backend to try, up to the pool's `max_connect_attempts`:
    /// `preferred` (a session's backend) first if it may take the work, then
    /// the balancer's picks among the rest.
    pub fn next_backend(
        &self,
        preferred: Option<SocketAddr>,
        attempts: &mut Attempts,
    ) -> Option<Arc<Backend>> {
        if attempts.made >= self.spec.max_connect_attempts as usize {
            return None;
        }
        attempts.made += 1;
        if !attempts.preferred_done {
            attempts.preferred_done = true;
            if let Some(member) = preferred.and_then(|a| self.sticky_member(a)) {
                if let Some(i) = self.backends.iter().position(|b| Arc::ptr_eq(b, member)) {
                    attempts.tried.push(i);
                }
                return Some(Arc::clone(member));
            }
        }
        let mut index = self.pick(&Pick {
            tried: &attempts.tried,
            hash: attempts.hash,
        })?;
        attempts.tried.push(index);
        // Slow start; hash algorithms keep their keys where they are.
        let window = self.spec.health.slow_start;
        if !window.is_zero()
            && !self.spec.algorithm.is_hash()
            && !self.backends[index].health().admit(window, health::now_ms())
        {
            // Ramping up and not its turn: the work goes elsewhere if it can.
            let again = Pick {
                tried: &attempts.tried,
                hash: attempts.hash,
            };
            if let Some(other) = self.pick(&again) {
                attempts.tried.push(other);
                index = other;
            }
        }
        Some(Arc::clone(&self.backends[index]))
    }
}
