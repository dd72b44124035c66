//! Per-thread shards of counters that every data-plane worker bumps on
//! every request (responses by class, duration histograms): each thread
//! writes its own cache line, and a reader sums the shards. One shared
//! counter would move its cache line between the cores at each request,
//! which costs more than the increment (HAProxy and Envoy keep such
//! counters per thread for the same reason).
//!
//! A data-plane worker counts in the shard its number names ([`enter`]);
//! any other thread takes one the first time it counts, from the last
//! shard down, so that it meets the workers (numbered from the first) only
//! when there are more threads than [`SHARDS`]. Threads that share a shard
//! stay correct (the cells are atomic) and cost only what a shared counter
//! did.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards per counter.
pub const SHARDS: usize = 8;

/// A value alone on its cache lines (two, for the adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// One `T` per shard.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: [Padded<T>; SHARDS],
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded {
            shards: std::array::from_fn(|_| Padded::default()),
        }
    }
}

impl<T> Sharded<T> {
    /// The calling thread's shard.
    pub fn local(&self) -> &T {
        &self.shards[index()].0
    }

    /// Every shard, for a reader to sum.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|shard| &shard.0)
    }
}

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The calling thread's shard index.
fn index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    INDEX.with(|index| {
        index.get().unwrap_or_else(|| {
            let taken = SHARDS - 1 - NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            index.set(Some(taken));
            taken
        })
    })
}

/// Makes the calling thread, data-plane worker `worker`, count in shard
/// `worker % SHARDS`, so that the first [`SHARDS`] workers never share one.
pub fn enter(worker: usize) {
    INDEX.with(|index| index.set(Some(worker % SHARDS)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn workers_count_apart_and_a_reader_sees_the_sum() {
        let counter = std::sync::Arc::new(Sharded::<AtomicU64>::default());
        let threads: Vec<_> = (0..3)
            .map(|worker| {
                let counter = std::sync::Arc::clone(&counter);
                std::thread::spawn(move || {
                    enter(worker);
                    for _ in 0..1000 {
                        counter.local().fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let per_shard: Vec<u64> = counter.all().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(per_shard[..3], [1000, 1000, 1000], "one shard per worker");
        assert_eq!(per_shard.iter().sum::<u64>(), 3000);
        assert_eq!(std::mem::align_of::<Padded<AtomicU64>>(), 128);
    }
}
