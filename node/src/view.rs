//! [`ClusterView`]: the immutable picture of the cluster the data plane works
//! from. It is built from a [`ClusterState`] and published through an
//! [`ArcSwap`]; a request loads the current view once (no lock, no await) and
//! keeps using that snapshot to its end. Rebuilding the view keeps each
//! backend's live [`Backend`] state (its work in hand, health, latency) when
//! the backend is still present (and the pool's balancer while its algorithm
//! and enabled backends are unchanged), so a new view changes
//! where new work goes without disturbing work in flight. A pool with a
//! sticky policy carries its [`PoolSticky`], built with the cluster's
//! cookie secret and the node's [`Sticky`] runtime.

use crate::backend::health::BackendHealth;
use crate::backend::queue::WaitQueue;
use crate::backend::{ActiveGuard, Backend};
use crate::balance::{self, Balancer, Pick};
use crate::dataplane::admission::{AclTable, ListenerGuard};
use crate::dataplane::l7::route::RouteView;
use crate::dataplane::traffic::{ListenerTraffic, PoolTraffic};
use crate::health::{self, PoolRuntime};
use crate::sticky::{PoolSticky, Sticky};
use crate::tls::Certificates;
use crate::tls::backend::BackendConnector;
use arc_swap::ArcSwap;
use raftlb_config::{AdminState, BackendSpec, ClusterState, ListenerSpec, PoolSpec, StickySecret};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

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
    /// What it served, kept while the listener exists.
    pub traffic: Arc<ListenerTraffic>,
    /// With HTTP/3 on: the `Alt-Svc` its TCP responses carry.
    pub alt_svc: Option<http::HeaderValue>,
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
    /// Work waiting for a backend under `max_connections`, kept while the
    /// pool exists.
    pub queue: Arc<WaitQueue>,
    /// Its HTTP responses, kept while the pool exists.
    pub traffic: Arc<PoolTraffic>,
}

/// What [`PoolView::next_backend`] found.
#[derive(Debug)]
pub enum Next {
    /// A backend, its slot taken for this work.
    Reserved(ActiveGuard),
    /// Backends may take the work but are at `max_connections`: the one
    /// the work is pinned to (a session's), or all it may still try.
    Full(Option<Arc<Backend>>),
    /// No backend left to try.
    Exhausted,
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
                    traffic: old.map_or_else(Default::default, |old| Arc::clone(&old.traffic)),
                    alt_svc: listener.http3_bind().and_then(|bind| alt_svc(bind.port())),
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
    /// Whether its balancer reads the backends' latency estimates (peak
    /// EWMA): only then are tries timed into them.
    pub fn samples_latency(&self) -> bool {
        self.spec.algorithm == raftlb_config::Algorithm::PeakEwma
    }

    /// `reported_down`: whether this node last committed the backend at
    /// that address down (it then starts down).
    fn build(
        spec: &PoolSpec,
        previous: Option<&PoolView>,
        sticky: Option<(&Arc<Sticky>, Option<&StickySecret>)>,
        reported_down: impl Fn(SocketAddr) -> bool,
    ) -> PoolView {
        let queue: Arc<WaitQueue> = previous.map_or_else(Default::default, |p| Arc::clone(&p.queue));
        let members: Vec<Arc<Backend>> = spec
            .backends
            .iter()
            .map(|b| {
                let kept = previous.and_then(|p| p.members.iter().find(|old| old.address() == b.address));
                let member = kept.map(Arc::clone).unwrap_or_else(|| {
                    // Added to a running pool: slow start; at start-up: as last reported.
                    let health = match (previous, reported_down(b.address)) {
                        (_, true) => BackendHealth::starting_down(),
                        (Some(_), false) => BackendHealth::ramping(),
                        (None, false) => BackendHealth::default(),
                    };
                    Arc::new(Backend::in_pool(b.address, health, Arc::clone(&queue)))
                });
                member.set_limit(b.max_connections.unwrap_or(spec.limits.max_connections) as usize);
                member
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
            queue,
            traffic: previous.map_or_else(Default::default, |p| Arc::clone(&p.traffic)),
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

    /// The next backend to try, up to the pool's `max_connect_attempts`,
    /// its slot taken: `preferred` (a session's backend) first if it may
    /// take the work, then the balancer's picks among the rest. A backend
    /// at its `max_connections` is passed over like an unavailable one,
    /// except `preferred`, which the work waits for.
    pub fn next_backend(&self, preferred: Option<SocketAddr>, attempts: &mut Attempts) -> Next {
        if attempts.made >= self.spec.max_connect_attempts as usize {
            return Next::Exhausted;
        }
        if !attempts.preferred_done
            && let Some(member) = preferred.and_then(|a| self.sticky_member(a))
        {
            let Some(guard) = member.try_track() else {
                return Next::Full(Some(Arc::clone(member)));
            };
            attempts.preferred_done = true;
            attempts.made += 1;
            if let Some(i) = self.backends.iter().position(|b| Arc::ptr_eq(b, member)) {
                attempts.tried.push(i);
            }
            return Next::Reserved(guard);
        }
        attempts.preferred_done = true;
        let pick = Pick {
            tried: &attempts.tried,
            hash: attempts.hash,
        };
        let Some(mut index) = self.pick(&pick) else {
            let full = (0..self.backends.len())
                .any(|i| !attempts.tried.contains(&i) && self.backends[i].available());
            return if full { Next::Full(None) } else { Next::Exhausted };
        };
        // Slow start; hash algorithms keep their keys where they are.
        let window = self.spec.health.slow_start;
        if !window.is_zero()
            && !self.spec.algorithm.is_hash()
            && !self.backends[index].health().admit(window, health::now_ms())
        {
            // Ramping up and not its turn: the work goes elsewhere if it can.
            attempts.tried.push(index);
            let again = Pick {
                tried: &attempts.tried,
                hash: attempts.hash,
            };
            index = self.pick(&again).unwrap_or(index);
            attempts.tried.pop();
        }
        match self.backends[index].try_track() {
            Some(guard) => {
                attempts.tried.push(index);
                attempts.made += 1;
                Next::Reserved(guard)
            }
            // Another request took the last slot since the pick.
            None => Next::Full(None),
        }
    }
}

/// `h3=":PORT"; ma=86400`: HTTP/3 is served on `port` of the same host,
/// for a day (RFC 7838).
fn alt_svc(port: u16) -> Option<http::HeaderValue> {
    http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
}

/// The view of the pool `spec` (named "p") alone.
#[cfg(test)]
pub(crate) fn test_pool_view(spec: PoolSpec) -> Arc<PoolView> {
    let mut state = ClusterState::default();
    state.apply(raftlb_config::Command::Bootstrap(raftlb_config::ClusterSpec {
        listeners: Vec::new(),
        pools: vec![spec],
        gslb: None,
    }));
    let view = ClusterView::build(&state, 0, None, None);
    Arc::clone(view.pool("p").expect("pool"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{test_pool, test_specs};

    fn limited(max_connections: u32, backends: usize) -> Arc<PoolView> {
        let mut spec = test_pool(&vec![1; backends]);
        spec.limits.max_connections = max_connections;
        spec.max_connect_attempts = backends as u32;
        test_pool_view(spec)
    }

    fn reserve(pool: &PoolView, preferred: Option<SocketAddr>) -> Next {
        pool.next_backend(preferred, &mut Attempts::default())
    }

    #[test]
    fn full_backends_are_passed_over_and_then_the_work_is_told_to_wait() {
        let pool = limited(1, 2);
        let Next::Reserved(a) = reserve(&pool, None) else {
            panic!("room")
        };
        let Next::Reserved(b) = reserve(&pool, None) else {
            panic!("room")
        };
        assert_ne!(
            a.backend().address(),
            b.backend().address(),
            "the full one is passed over"
        );
        assert!(matches!(reserve(&pool, None), Next::Full(None)));
        drop(a);
        assert!(matches!(reserve(&pool, None), Next::Reserved(_)));
    }

    #[test]
    fn a_sessions_full_backend_is_waited_for_not_replaced() {
        let pool = limited(1, 2);
        let first = pool.backends[0].address();
        let Next::Reserved(held) = reserve(&pool, Some(first)) else {
            panic!("room")
        };
        match reserve(&pool, Some(first)) {
            Next::Full(Some(pinned)) => assert_eq!(pinned.address(), first),
            other => panic!("expected to wait for {first}: {other:?}"),
        }
        drop(held);
        let Next::Reserved(again) = reserve(&pool, Some(first)) else {
            panic!("room again")
        };
        assert_eq!(again.backend().address(), first);
    }

    #[test]
    fn unavailable_backends_exhaust_rather_than_queue() {
        let pool = limited(1, 1);
        pool.backends[0].health().set_down(true);
        assert!(matches!(reserve(&pool, None), Next::Exhausted));
    }

    #[test]
    fn a_limit_change_keeps_the_backend_and_its_count() {
        let pool = limited(1, 1);
        let Next::Reserved(_held) = reserve(&pool, None) else {
            panic!("room")
        };
        let mut spec = pool.spec.clone();
        spec.limits.max_connections = 2;
        let rebuilt = PoolView::build(&spec, Some(&pool), None, |_| false);
        assert!(Arc::ptr_eq(&rebuilt.backends[0], &pool.backends[0]));
        assert_eq!(rebuilt.backends[0].active(), 1);
        let Next::Reserved(_second) = rebuilt.next_backend(None, &mut Attempts::default()) else {
            panic!("the raised limit has room")
        };
        assert!(matches!(
            rebuilt.next_backend(None, &mut Attempts::default()),
            Next::Full(None)
        ));
    }

    #[test]
    fn a_view_rebuild_keeps_the_table_while_the_enabled_backends_stay() {
        use crate::balance::Maglev;
        use raftlb_config::{AdminState, BackendSpec, ClusterSpec, ClusterState, Command, PoolSpec};
        let view = |backends: Vec<BackendSpec>, previous: Option<&ClusterView>| {
            let mut state = ClusterState::default();
            state.apply(Command::Bootstrap(ClusterSpec {
                listeners: Vec::new(),
                pools: vec![PoolSpec {
                    algorithm: raftlb_config::Algorithm::Maglev,
                    backends,
                    ..test_pool(&[])
                }],
                gslb: None,
            }));
            ClusterView::build(&state, 0, None, previous)
        };
        let specs = test_specs(&[1, 1, 1]);
        let first = view(specs.clone(), None);
        let again = view(specs.clone(), Some(&first));
        let (a, b) = (
            &first.pool("p").unwrap().balancer,
            &again.pool("p").unwrap().balancer,
        );
        assert!(Arc::ptr_eq(a, b), "same backends: same table");
        let mut drained = specs.clone();
        drained[1].state = AdminState::Drain;
        let changed = view(drained, Some(&again));
        let c = &changed.pool("p").unwrap().balancer;
        assert!(!Arc::ptr_eq(b, c));
        assert_ne!(b.table_fingerprint(), c.table_fingerprint());
        assert_eq!(
            c.table_fingerprint(),
            Some(Maglev::new(&[specs[0].clone(), specs[2].clone()]).fingerprint())
        );
    }
}
