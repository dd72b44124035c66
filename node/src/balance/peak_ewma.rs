//! Peak EWMA (Finagle's, as Linkerd uses it): each backend keeps a
//! [`Latency`](crate::backend::latency::Latency) estimate, and a pick takes
//! the better of two random available, untried backends by
//! cost = latency × (in flight + 1) ÷ weight.
//!
//! Samples: the time from sending a request to its response headers (L7),
//! the connect time (L4). A backend without a sample yet costs as if its
//! latency were that of the backend it is compared with (only load then
//! decides); it gets its first sample soon.

use super::{Balancer, Pick, p2c, weights};
use crate::backend::Backend;
use crate::backend::latency::now;
use raftlb_config::BackendSpec;
use std::sync::Arc;

#[derive(Debug)]
pub struct PeakEwma {
    weights: Vec<u64>,
}

impl PeakEwma {
    pub fn new(backends: &[BackendSpec]) -> Self {
        PeakEwma {
            weights: weights(backends),
        }
    }

    /// [`Balancer::pick`] at `now`.
    pub fn pick_at(&self, backends: &[Arc<Backend>], pick: &Pick<'_>, now: u64) -> Option<usize> {
        let load = |i: usize| {
            let weight = self.weights.get(i).copied().unwrap_or(1) as f64;
            (backends[i].active() as f64 + 1.0) / weight
        };
        p2c::choose(
            backends.len(),
            |i| pick.allows(backends, i),
            |b, a| {
                let (lb, la) = (
                    backends[b].latency().estimate(now),
                    backends[a].latency().estimate(now),
                );
                // Unsampled: as fast as the other (both unsampled: load alone).
                let (lb, la) = match (lb, la) {
                    (Some(lb), Some(la)) => (lb, la),
                    (Some(l), None) | (None, Some(l)) => (l, l),
                    (None, None) => (1.0, 1.0),
                };
                lb * load(b) < la * load(a)
            },
        )
    }
}

impl Balancer for PeakEwma {
    fn pick(&self, backends: &[Arc<Backend>], pick: &Pick<'_>) -> Option<usize> {
        self.pick_at(backends, pick, now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{FRESH, test_backends, test_specs, tried};
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn prefers_the_fast_backend_and_load_counts_too() {
        let backends = test_backends(2);
        let peak = PeakEwma::new(&test_specs(&[1, 1]));
        backends[0].latency().observe(ms(50), S);
        backends[1].latency().observe(ms(5), S);
        for _ in 0..100 {
            assert_eq!(peak.pick_at(&backends, &FRESH, S), Some(1));
        }
        // 5 ms × 11 in flight > 50 ms × 1.
        let _busy: Vec<_> = (0..10).map(|_| backends[1].track()).collect();
        assert_eq!(peak.pick_at(&backends, &FRESH, S), Some(0));
        assert_eq!(peak.pick_at(&backends, &tried(&[0]), S), Some(1));
        assert_eq!(peak.pick_at(&backends, &tried(&[0, 1]), S), None);
    }

    #[test]
    fn an_unsampled_backend_competes_on_load() {
        let backends = test_backends(2);
        let peak = PeakEwma::new(&test_specs(&[1, 1]));
        backends[0].latency().observe(ms(50), S);
        let _one = backends[0].track();
        for _ in 0..20 {
            assert_eq!(peak.pick_at(&backends, &FRESH, S), Some(1));
        }
    }
}
