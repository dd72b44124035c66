//! Random two choices: of two distinct backends drawn at random among the
//! available, untried ones, the one with fewer in-flight requests (L7) or
//! open connections (L4) per unit of weight. Nearly as good as least
//! connections at avoiding a slow or busy backend, without its scan of
//! every backend, and without herding every node's traffic onto the same
//! least-loaded one.

use super::{Balancer, Pick, p2c, weights};
use crate::backend::Backend;
use raftlb_config::BackendSpec;
use std::sync::Arc;

#[derive(Debug)]
pub struct RandomTwo {
    weights: Vec<u64>,
}

impl RandomTwo {
    pub fn new(backends: &[BackendSpec]) -> Self {
        RandomTwo {
            weights: weights(backends),
        }
    }
}

impl Balancer for RandomTwo {
    fn pick(&self, backends: &[Arc<Backend>], pick: &Pick<'_>) -> Option<usize> {
        let weight = |i: usize| self.weights.get(i).copied().unwrap_or(1);
        p2c::choose(
            backends.len(),
            |i| pick.allows(backends, i),
            // active_b / weight_b < active_a / weight_a, without division.
            |b, a| backends[b].active() as u64 * weight(a) < backends[a].active() as u64 * weight(b),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{FRESH, test_backends, test_specs, tried};

    #[test]
    fn never_picks_the_busiest_of_three() {
        let backends = test_backends(3);
        let two = RandomTwo::new(&test_specs(&[1, 1, 1]));
        let _busy = [backends[0].track(), backends[0].track()];
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[two.pick(&backends, &FRESH).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
    }

    #[test]
    fn weights_scale_the_load() {
        let backends = test_backends(2);
        let two = RandomTwo::new(&test_specs(&[1, 4]));
        // 3 in flight over weight 4 beats 1 over weight 1.
        let _load = [backends[1].track(), backends[1].track(), backends[1].track()];
        let _one = backends[0].track();
        for _ in 0..100 {
            assert_eq!(two.pick(&backends, &FRESH), Some(1));
        }
        assert_eq!(two.pick(&backends, &tried(&[1])), Some(0));
        assert_eq!(two.pick(&backends, &tried(&[0, 1])), None);
    }
}
