//! Backend choice. One [`Balancer`] trait, one file per algorithm. A balancer
//! is built from the pool's committed backend list (so its fixed tables are
//! identical on every node) and is asked, per connection or request, for a
//! backend index that is not among those already tried. Picking never locks
//! and never allocates.

mod least_connections;
mod round_robin;
mod weighted_round_robin;

use crate::view::Backend;
use raftlb_config::{Algorithm, BackendSpec};
use std::fmt::Debug;
use std::sync::Arc;

pub use least_connections::LeastConnections;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

/// Chooses a backend of a pool.
pub trait Balancer: Send + Sync + Debug {
    /// An index into `backends` that is not in `tried`, or `None` when every
    /// backend has been tried.
    fn pick(&self, backends: &[Arc<Backend>], tried: &[usize]) -> Option<usize>;
}

/// The balancer for `algorithm` over `backends` (the pool's spec, in order).
pub fn build(algorithm: Algorithm, backends: &[BackendSpec]) -> Box<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::default()),
        Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(backends)),
        Algorithm::LeastConnections => Box::new(LeastConnections::new(backends)),
    }
}

#[cfg(test)]
pub(crate) fn test_backends(n: usize) -> Vec<Arc<Backend>> {
    (0..n)
        .map(|i| Arc::new(Backend::new(([127, 0, 0, 1], 9000 + i as u16).into())))
        .collect()
}
