//! A lock-free latency histogram with Prometheus's default buckets, for
//! request durations: each sample adds one to its bucket and its
//! microseconds to the sum, in the sampling thread's [shard](crate::shard);
//! a reader takes a [`HistogramSnapshot`] (the shards summed) and renders
//! the cumulative `_bucket`, `_sum` and `_count` series.

use crate::shard::Sharded;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (`+Inf` is implicit).
pub const BOUNDS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Counts per bucket (the last one is `+Inf`) and the sum of samples.
#[derive(Debug, Default)]
pub struct Histogram {
    shards: Sharded<Cells>,
}

/// One shard's counts.
#[derive(Debug, Default)]
struct Cells {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

/// A histogram as read at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Per bucket, not cumulative; the last is `+Inf`.
    pub buckets: [u64; BOUNDS.len() + 1],
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, sample: Duration) {
        let seconds = sample.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        let cells = self.shards.local();
        cells.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
        cells.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = [0; BOUNDS.len() + 1];
        let mut sum_micros = 0u64;
        for cells in self.shards.all() {
            for (total, cell) in buckets.iter_mut().zip(&cells.buckets) {
                *total += cell.load(Ordering::Relaxed);
            }
            sum_micros = sum_micros.saturating_add(cells.sum_micros.load(Ordering::Relaxed));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: sum_micros as f64 / 1e6,
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// `(le, cumulative count)` per bucket, `+Inf` last, as Prometheus
    /// exposes them.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut total = 0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                total += n;
                let le = BOUNDS.get(i).map_or("+Inf".to_string(), f64::to_string);
                (le, total)
            })
            .collect()
    }

    /// Adds another snapshot's counts (a pool's from its backends').
    pub fn add(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_bucket_and_render_cumulatively() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(70));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert!((s.sum_seconds - 60.078).abs() < 1e-9);
        let cumulative = s.cumulative();
        assert_eq!(cumulative[0], ("0.005".to_string(), 2));
        assert_eq!(cumulative[4], ("0.1".to_string(), 3));
        assert_eq!(cumulative[10], ("10".to_string(), 3));
        assert_eq!(cumulative[11], ("+Inf".to_string(), 4));
    }
}
