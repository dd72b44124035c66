//! IP hash by rendezvous (highest random weight) hashing: every backend
//! scores the client's source-IP hash mixed with the hash of the backend's
//! address, and the best-scoring backend the pick allows wins. A client
//! stays on its backend as long as that backend is in the pool and
//! available, whatever the order of the list or the other backends'
//! comings and goings; a backend that goes away moves only its own clients,
//! spread over the others. Weights scale the score (weighted rendezvous:
//! `-weight / ln(u)`), so shares follow the weights. O(backends) per pick,
//! no table.

use super::hash::{self, seed};
use super::{Balancer, Pick};
use crate::backend::Backend;
use raftlb_config::BackendSpec;
use std::sync::Arc;

#[derive(Debug)]
pub struct IpHash {
    /// Each backend's identity hash, in spec order.
    ids: Vec<u64>,
    /// Each backend's weight; `None` when all are equal (integer scores).
    weights: Option<Vec<f64>>,
}

impl IpHash {
    pub fn new(backends: &[BackendSpec]) -> Self {
        let equal = backends.windows(2).all(|w| w[0].weight == w[1].weight);
        IpHash {
            ids: backends
                .iter()
                .map(|b| hash::address(seed::BACKEND, b.address))
                .collect(),
            weights: (!equal).then(|| backends.iter().map(|b| f64::from(b.weight.max(1))).collect()),
        }
    }

    /// Backend `i`'s score for `key`: higher wins.
    fn score(&self, key: u64, i: usize) -> f64 {
        let h = hash::mix(key ^ self.ids[i]);
        match &self.weights {
            // The top 53 bits: exact in an f64.
            None => (h >> 11) as f64,
            Some(weights) => {
                // u in (0, 1) from the top 53 bits; -ln(u) > 0.
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                weights[i] / -u.ln()
            }
        }
    }
}

impl Balancer for IpHash {
    fn pick(&self, backends: &[Arc<Backend>], pick: &Pick<'_>) -> Option<usize> {
        let key = pick.hash.unwrap_or(0);
        let n = backends.len().min(self.ids.len());
        let mut best: Option<(usize, f64)> = None;
        for i in (0..n).filter(|&i| pick.allows(backends, i)) {
            let score = self.score(key, i);
            if best.is_none_or(|(_, top)| score > top) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{test_backends, test_specs};

    fn at(hash: u64, tried: &[usize]) -> Pick<'_> {
        Pick {
            tried,
            hash: Some(hash),
        }
    }

    #[test]
    fn a_key_stays_and_only_a_lost_backends_keys_move() {
        let backends = test_backends(5);
        let ip = IpHash::new(&test_specs(&[1; 5]));
        let mut counts = [0; 5];
        for key in 0..10_000u64 {
            let key = hash::mix(key);
            let first = ip.pick(&backends, &at(key, &[])).unwrap();
            assert_eq!(ip.pick(&backends, &at(key, &[])), Some(first));
            counts[first] += 1;
            let without_2 = ip.pick(&backends, &at(key, &[2])).unwrap();
            if first != 2 {
                assert_eq!(without_2, first, "key {key} moved though its backend stayed");
            } else {
                assert_ne!(without_2, 2);
            }
        }
        for c in counts {
            assert!((1_700..2_300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn the_order_of_the_list_does_not_matter() {
        let specs = test_specs(&[1, 1, 1, 1]);
        let reversed: Vec<_> = specs.iter().rev().cloned().collect();
        let (ip, pi) = (IpHash::new(&specs), IpHash::new(&reversed));
        let backends = test_backends(4);
        for key in 0..1000u64 {
            let key = hash::mix(key);
            let a = ip.pick(&backends, &at(key, &[])).unwrap();
            let b = pi.pick(&backends, &at(key, &[])).unwrap();
            assert_eq!(specs[a].address, reversed[b].address);
        }
    }

    #[test]
    fn shares_follow_weights() {
        let backends = test_backends(2);
        let ip = IpHash::new(&test_specs(&[1, 3]));
        let heavy = (0..20_000u64)
            .filter(|&k| ip.pick(&backends, &at(hash::mix(k), &[])) == Some(1))
            .count();
        assert!(
            (14_400..15_600).contains(&heavy),
            "{heavy} of 20000, expected 3/4"
        );
        assert_eq!(ip.pick(&backends, &at(7, &[0, 1])), None);
    }
}
