//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table
//! of M slots, each naming a backend; a key goes to the slot `hash % M`. Each backend walks
//! its own permutation of the slots — `offset + j × skip (mod M)`, offset
//! and skip from two hashes of its address — and the backends take turns
//! claiming their next free slot until the table is full, a backend of
//! weight w taking w turns for every `max weight` turns of the heaviest.
//! Every backend ends with its share of slots, and adding or removing one
//! moves little more than that backend's share of keys.
//!
//! M is a prime with at least 100 slots per backend, but it must not follow
//! the number of backends closely: a key's slot is `hash % M`, so a new M
//! moves nearly every key. M is the smallest prime ≥ 65 536 × 2^k, the
//! smallest such that is ≥ 100 × backends (the paper's 65 537 up to 655
//! backends): a pool's M changes only when its backends double past that.
//!
//! The table depends only on the pool's committed enabled backends (their
//! addresses and weights; the backends take turns in address order, not
//! list order), and the hash is fixed ([`super::hash`]), so every node
//! builds the same table: [`Maglev::fingerprint`] proves it. When a key's
//! backend is unavailable or tried, the key walks on to the next slots
//! until one names a backend the pick allows: the keys of available
//! backends never move, and a lost backend's keys spread over the rest.

use super::hash::{self, seed};
use super::{Balancer, Pick};
use crate::backend::Backend;
use raftlb_config::BackendSpec;
use std::sync::Arc;

#[derive(Debug)]
pub struct Maglev {
    /// Slot → backend index (spec order).
    table: Box<[u32]>,
    fingerprint: u64,
}

/// Slots per backend, at least.
const SLOTS_PER_BACKEND: usize = 100;
/// The first rung of the sizes M may take (the next prime is the paper's 65 537).
const SMALLEST: usize = 1 << 16;

impl Maglev {
    pub fn new(backends: &[BackendSpec]) -> Self {
        let table = fill(backends);
        let ids: Vec<u64> = backends
            .iter()
            .map(|b| hash::address(seed::BACKEND, b.address))
            .collect();
        // By address, not index: equal for equal tables whatever the order.
        let mut fingerprint = hash::mix(table.len() as u64);
        for &i in table.iter() {
            fingerprint = hash::mix(fingerprint ^ ids[i as usize]);
        }
        Maglev { table, fingerprint }
    }

    /// A hash of the table by backend address: equal on every node that
    /// built it from the same backends.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The number of slots, M.
    pub fn size(&self) -> usize {
        self.table.len()
    }
}

/// M for `backends`: the smallest prime ≥ 65 536 × 2^k, k the smallest
/// for which that is ≥ 100 × `backends`.
pub fn table_size(backends: usize) -> usize {
    let needed = backends.saturating_mul(SLOTS_PER_BACKEND);
    let mut m = SMALLEST;
    while m < needed {
        m *= 2;
    }
    while !is_prime(m) {
        m += 1;
    }
    m
}

fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

/// One backend's walk through its permutation of the slots.
struct Walk {
    index: u32,
    weight: u64,
    next: u64,
    skip: u64,
    claimed: u64,
}

/// The paper's population, with weighted turns.
fn fill(backends: &[BackendSpec]) -> Box<[u32]> {
    if backends.is_empty() {
        return Box::new([]);
    }
    let m = table_size(backends.len());
    let size = m as u64;
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by_key(|&i| backends[i].address);
    let mut walks: Vec<Walk> = order
        .into_iter()
        .map(|i| {
            let address = backends[i].address;
            Walk {
                index: i as u32,
                weight: u64::from(backends[i].weight.max(1)),
                next: hash::address(seed::OFFSET, address) % size,
                skip: hash::address(seed::SKIP, address) % (size - 1) + 1,
                claimed: 0,
            }
        })
        .collect();
    let heaviest = walks.iter().map(|w| w.weight).max().unwrap_or(1);
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; m].into_boxed_slice();
    let mut filled = 0;
    for turn in 1u64.. {
        for walk in &mut walks {
            // After `turn` turns a backend has claimed turn × w / max slots.
            if walk.claimed * heaviest >= turn * walk.weight {
                continue;
            }
            // M is prime and 0 < skip < M: the walk visits every slot, so a
            // free one is found while any is left.
            while table[walk.next as usize] != EMPTY {
                walk.next = (walk.next + walk.skip) % size;
            }
            table[walk.next as usize] = walk.index;
            walk.next = (walk.next + walk.skip) % size;
            walk.claimed += 1;
            filled += 1;
            if filled == m {
                return table;
            }
        }
    }
    table
}

impl Balancer for Maglev {
    fn pick(&self, backends: &[Arc<Backend>], pick: &Pick<'_>) -> Option<usize> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let start = (pick.hash.unwrap_or(0) % m as u64) as usize;
        let first = self.table[start] as usize;
        if pick.allows(backends, first) {
            return Some(first);
        }
        // The walk ends once it finds an allowed backend; make sure one is.
        if !(0..backends.len()).any(|i| pick.allows(backends, i)) {
            return None;
        }
        (1..m)
            .map(|k| self.table[(start + k) % m] as usize)
            .find(|&i| pick.allows(backends, i))
    }

    fn table_fingerprint(&self) -> Option<u64> {
        Some(self.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{test_backends, test_specs};

    const KEYS: u64 = 100_000;

    /// The backend address each of the test keys goes to.
    fn routes(specs: &[BackendSpec], tried: &[usize]) -> Vec<std::net::SocketAddr> {
        let maglev = Maglev::new(specs);
        let backends = test_backends(specs.len());
        (0..KEYS)
            .map(|k| {
                let pick = Pick {
                    tried,
                    hash: Some(hash::mix(k)),
                };
                specs[maglev.pick(&backends, &pick).expect("a backend")].address
            })
            .collect()
    }

    fn moved(a: &[std::net::SocketAddr], b: &[std::net::SocketAddr]) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
    }

    #[test]
    fn size_is_a_prime_of_100_slots_per_backend_that_rarely_changes() {
        assert_eq!(table_size(0), 65_537);
        assert_eq!(table_size(655), 65_537);
        assert_eq!(table_size(656), 131_101);
        assert_eq!(table_size(1000), 131_101);
        assert_eq!(table_size(1311), 262_147);
        for n in [1, 3, 10, 37, 250, 700, 3000] {
            let m = table_size(n);
            assert!(m >= 100 * n && is_prime(m), "{n} backends: {m}");
        }
        assert_eq!(Maglev::new(&test_specs(&[1; 10])).size(), 65_537);
    }

    #[test]
    fn shares_are_even_and_follow_weights() {
        let specs = test_specs(&[1; 10]);
        let maglev = Maglev::new(&specs);
        let mut slots = [0usize; 10];
        for &i in maglev.table.iter() {
            slots[i as usize] += 1;
        }
        // 65 537 slots: 6553 or 6554 each.
        assert!(slots.iter().all(|&s| (6553..=6554).contains(&s)), "{slots:?}");
        let weighted = Maglev::new(&test_specs(&[1, 3]));
        let heavy = weighted.table.iter().filter(|&&i| i == 1).count();
        let share = heavy as f64 / weighted.size() as f64;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }

    #[test]
    fn same_backends_in_another_order_give_the_same_table() {
        let specs = test_specs(&[1, 2, 1, 1, 5, 1, 1]);
        let mut shuffled = specs.clone();
        shuffled.reverse();
        shuffled.swap(1, 4);
        let (a, b) = (Maglev::new(&specs), Maglev::new(&shuffled));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(routes(&specs, &[]), routes(&shuffled, &[]));
        let mut heavier = specs.clone();
        heavier[0].weight = 2;
        assert_ne!(Maglev::new(&heavier).fingerprint(), a.fingerprint());
    }

    #[test]
    fn removing_one_of_ten_moves_little_more_than_its_keys() {
        let ten = test_specs(&[1; 10]);
        let nine: Vec<_> = ten
            .iter()
            .filter(|b| b.address != ten[3].address)
            .cloned()
            .collect();
        let before = routes(&ten, &[]);
        let after = routes(&nine, &[]);
        let share = moved(&before, &after);
        eprintln!("removing 1 of 10 backends moved {:.2} % of keys", share * 100.0);
        assert!(share <= 0.12, "{share}");
        // Those of the removed backend all moved; few others did.
        let own = before.iter().filter(|a| **a == ten[3].address).count() as f64 / KEYS as f64;
        assert!(share >= own && own > 0.08, "{share} {own}");
    }

    #[test]
    fn adding_an_eleventh_moves_about_one_in_eleven() {
        let eleven = test_specs(&[1; 11]);
        let before = routes(&eleven[..10], &[]);
        let after = routes(&eleven, &[]);
        let share = moved(&before, &after);
        eprintln!("adding an 11th backend moved {:.2} % of keys", share * 100.0);
        assert!((0.075..=0.12).contains(&share), "{share}, expected about 1/11");
        // Nearly every key that moved went to the new backend.
        let moved_keys = before.iter().zip(&after).filter(|(x, y)| x != y);
        let elsewhere = moved_keys.filter(|(_, y)| **y != eleven[10].address).count();
        assert!(
            elsewhere as f64 <= 0.02 * KEYS as f64,
            "{elsewhere} moved between old backends"
        );
    }

    #[test]
    fn an_unavailable_backend_moves_only_its_own_keys() {
        // `tried` and unavailable are one test to the balancer (`Pick::allows`).
        let specs = test_specs(&[1; 10]);
        let before = routes(&specs, &[]);
        let after = routes(&specs, &[3]);
        for (a, b) in before.iter().zip(&after) {
            if *a == specs[3].address {
                assert_ne!(b, a);
            } else {
                assert_eq!(b, a, "a key of an available backend moved");
            }
        }
        // The lost backend's keys spread over the others.
        let mut receivers: Vec<_> = before
            .iter()
            .zip(&after)
            .filter(|(a, _)| **a == specs[3].address)
            .map(|(_, b)| *b)
            .collect();
        receivers.sort();
        receivers.dedup();
        assert!(receivers.len() >= 8, "{receivers:?}");
        let backends = test_backends(10);
        let all: Vec<usize> = (0..10).collect();
        let pick = Pick {
            tried: &all,
            hash: Some(1),
        };
        assert_eq!(Maglev::new(&specs).pick(&backends, &pick), None);
    }
}
