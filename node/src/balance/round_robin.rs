//! Round robin: each backend in turn, one shared atomic counter; an
//! unavailable or tried backend's turn goes to the next.

use super::{Balancer, Pick};
use crate::backend::Backend;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, backends: &[Arc<Backend>], pick: &Pick<'_>) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| pick.allows(backends, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{FRESH, test_backends, tried};

    #[test]
    fn alternates_exactly() {
        let backends = test_backends(3);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&backends, &FRESH).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_tried_and_gives_up_when_all_tried() {
        let backends = test_backends(3);
        let rr = RoundRobin::default();
        assert_eq!(rr.pick(&backends, &tried(&[0])), Some(1));
        assert_eq!(rr.pick(&backends, &tried(&[0, 1, 2])), None);
        assert_eq!(rr.pick(&[], &FRESH), None);
    }
}
