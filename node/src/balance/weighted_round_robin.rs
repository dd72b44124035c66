//! Smooth weighted round robin, nginx's algorithm: at each step every backend
//! gains its weight, the one with the most is chosen and pays back the total.
//! For weights 5:1:1 that gives `a a b a c a a` rather than `a a a a a b c`.
//!
//! The sequence depends only on the weights and repeats every `sum(weights)`
//! steps, so it is computed once when the pool's view is built; picking is then
//! an atomic increment and a table read — no lock, unlike nginx's per-pick
//! update of running weights.

use super::{Balancer, Pick};
use crate::backend::Backend;
use raftlb_config::BackendSpec;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct WeightedRoundRobin {
    /// One period of the smooth sequence, as backend indices.
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    pub fn new(backends: &[BackendSpec]) -> Self {
        WeightedRoundRobin {
            schedule: smooth_schedule(&backends.iter().map(|b| i64::from(b.weight)).collect::<Vec<_>>()),
            next: AtomicUsize::new(0),
        }
    }
}

/// One period of nginx's smooth weighted round robin over `weights`.
fn smooth_schedule(weights: &[i64]) -> Vec<u32> {
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

impl Balancer for WeightedRoundRobin {
    fn pick(&self, backends: &[Arc<Backend>], pick: &Pick<'_>) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 || backends.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| self.schedule[(start + k) % len] as usize)
            .find(|&i| pick.allows(backends, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{FRESH, test_backends, test_specs, tried};

    #[test]
    fn nginx_sequence_for_5_1_1() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_follow_weights() {
        let wrr = WeightedRoundRobin::new(&test_specs(&[1, 3]));
        let backends = test_backends(2);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[wrr.pick(&backends, &FRESH).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 300]);
        assert_eq!(wrr.pick(&backends, &tried(&[1])), Some(0));
        assert_eq!(wrr.pick(&backends, &tried(&[0, 1])), None);
    }
}
