//! Backend choice. One [`Balancer`] trait, one file per algorithm. A balancer
//! is built from the pool's committed backend list (so its fixed tables are
//! identical on every node) and is asked, per connection or request, for a
//! backend index that is available and not among those already tried
//! ([`Pick::allows`]). Hashing algorithms also get the request's key hash
//! ([`request_hash`], [`source_hash`], from the pool's `hash_key`). Picking
//! never locks and never allocates. What a balancer reads of a backend is
//! its live state ([`Backend`]); it knows nothing of views or pools.

pub mod hash;
mod ip_hash;
mod key;
mod least_connections;
mod maglev;
mod p2c;
pub mod peak_ewma;
mod random_two;
mod round_robin;
mod weighted_round_robin;

use crate::backend::Backend;
use raftlb_config::{Algorithm, BackendSpec};
use std::fmt::Debug;
use std::sync::Arc;

pub use ip_hash::IpHash;
pub use key::{request_hash, source_hash};
pub use least_connections::LeastConnections;
pub use maglev::Maglev;
pub use peak_ewma::PeakEwma;
pub use random_two::RandomTwo;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

/// What one pick knows about its connection or request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pick<'a> {
    /// Indices already tried for this connection or request.
    pub tried: &'a [usize],
    /// The request's key hash, for the hashing algorithms (`ip_hash`,
    /// `maglev`); `None` for the others, which ignore it.
    pub hash: Option<u64>,
}

impl Pick<'_> {
    /// Whether backend `i` may take this work: available, with room under
    /// its `max_connections`, and not yet tried.
    pub fn allows(&self, backends: &[Arc<Backend>], i: usize) -> bool {
        !self.tried.contains(&i) && backends.get(i).is_some_and(|b| b.available() && b.has_room())
    }
}

/// Chooses a backend of a pool.
pub trait Balancer: Send + Sync + Debug {
    /// An index into `backends` that [`Pick::allows`], or `None` when none does.
    fn pick(&self, backends: &[Arc<Backend>], pick: &Pick<'_>) -> Option<usize>;

    /// The fingerprint of a fixed lookup table (Maglev's), equal on every
    /// node that built it from the same backends; `None` without one.
    fn table_fingerprint(&self) -> Option<u64> {
        None
    }
}

/// The balancer for `algorithm` over `backends` (the pool's spec, in order).
pub fn build(algorithm: Algorithm, backends: &[BackendSpec]) -> Arc<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => Arc::new(RoundRobin::default()),
        Algorithm::WeightedRoundRobin => Arc::new(WeightedRoundRobin::new(backends)),
        Algorithm::LeastConnections => Arc::new(LeastConnections::new(backends)),
        Algorithm::IpHash => Arc::new(IpHash::new(backends)),
        Algorithm::Maglev => Arc::new(Maglev::new(backends)),
        Algorithm::RandomTwo => Arc::new(RandomTwo::new(backends)),
        Algorithm::PeakEwma => Arc::new(PeakEwma::new(backends)),
    }
}

/// Each backend's weight, at least 1, in spec order.
fn weights(backends: &[BackendSpec]) -> Vec<u64> {
    backends.iter().map(|b| u64::from(b.weight.max(1))).collect()
}

#[cfg(test)]
pub(crate) fn test_backends(n: usize) -> Vec<Arc<Backend>> {
    test_specs(&vec![1; n])
        .iter()
        .map(|b| Arc::new(Backend::new(b.address)))
        .collect()
}

/// Enabled backends on 127.0.0.1:9000… with these weights.
#[cfg(test)]
pub(crate) fn test_specs(weights: &[u32]) -> Vec<BackendSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| BackendSpec {
            weight,
            ..BackendSpec::new(([127, 0, 0, 1], 9000 + i as u16).into())
        })
        .collect()
}

/// Round-robin pool "p" of [`test_specs`], the other settings at their defaults.
#[cfg(test)]
pub(crate) fn test_pool(weights: &[u32]) -> raftlb_config::PoolSpec {
    raftlb_config::PoolSpec {
        name: "p".to_string(),
        algorithm: Algorithm::RoundRobin,
        hash_key: Default::default(),
        backends: test_specs(weights),
        connect_timeout: raftlb_config::PoolSpec::DEFAULT_CONNECT_TIMEOUT,
        response_timeout: raftlb_config::PoolSpec::DEFAULT_RESPONSE_TIMEOUT,
        max_connect_attempts: 1,
        sticky: None,
        tls: None,
        backend_protocol: Default::default(),
        health: Default::default(),
        limits: Default::default(),
        proxy_protocol: None,
        discovery: None,
        discovery_status: Default::default(),
    }
}

/// A pick with nothing tried and no hash.
#[cfg(test)]
pub(crate) const FRESH: Pick<'static> = Pick {
    tried: &[],
    hash: None,
};

/// A pick with `tried` tried and no hash.
#[cfg(test)]
pub(crate) fn tried(tried: &[usize]) -> Pick<'_> {
    Pick { tried, hash: None }
}
