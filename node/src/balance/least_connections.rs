//! Least connections, weighted: the backend with the fewest active
//! connections (L4) or in-flight requests (L7) per unit of weight. Ties are
//! broken by a rotating start so equally idle backends share the load.

use super::{Balancer, Pick, weights};
use crate::backend::Backend;
use raftlb_config::BackendSpec;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct LeastConnections {
    weights: Vec<u64>,
    rotation: AtomicUsize,
}

impl LeastConnections {
    pub fn new(backends: &[BackendSpec]) -> Self {
        LeastConnections {
            weights: weights(backends),
            rotation: AtomicUsize::new(0),
        }
    }
}

impl Balancer for LeastConnections {
    fn pick(&self, backends: &[Arc<Backend>], pick: &Pick<'_>) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64, u64)> = None; // (index, active, weight)
        for k in 0..n {
            let i = (start + k) % n;
            if !pick.allows(backends, i) {
                continue;
            }
            let active = backends[i].active() as u64;
            let weight = self.weights.get(i).copied().unwrap_or(1);
            // active/weight < best_active/best_weight, without division.
            let better = match best {
                None => true,
                Some((_, best_active, best_weight)) => active * best_weight < best_active * weight,
            };
            if better {
                best = Some((i, active, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{FRESH, test_backends, test_specs as specs, tried};

    #[test]
    fn prefers_the_idle_backend() {
        let backends = test_backends(2);
        let lc = LeastConnections::new(&specs(&[1, 1]));
        let _busy = [backends[0].track(), backends[0].track()];
        for _ in 0..10 {
            assert_eq!(lc.pick(&backends, &FRESH), Some(1));
        }
    }

    #[test]
    fn spreads_ties_and_respects_weight() {
        let backends = test_backends(2);
        let lc = LeastConnections::new(&specs(&[1, 1]));
        let picks: Vec<_> = (0..4).map(|_| lc.pick(&backends, &FRESH).unwrap()).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");

        let weighted = LeastConnections::new(&specs(&[1, 4]));
        let _load = [backends[1].track(), backends[1].track(), backends[1].track()];
        // 3 active / weight 4 < 1 / 1 only once backend 0 holds one.
        let _one = backends[0].track();
        assert_eq!(weighted.pick(&backends, &FRESH), Some(1));
        assert_eq!(weighted.pick(&backends, &tried(&[1])), Some(0));
    }
}
