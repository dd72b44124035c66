//! What a backend has served through this node, for `/metrics` and the
//! status page: responses by status class and their durations (sending the
//! request to the response's headers), tries that got no response
//! (connect failure, reset, timeout), and L4 connections opened. Counted
//! where each try ends, beside its outlier-detection outcome.

use crate::dataplane::traffic::{class_index, sum_classes};
use crate::histogram::{Histogram, HistogramSnapshot};
use crate::shard::Sharded;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A backend's counters on this node; they outlive view rebuilds with the
/// backend.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Responses by class: 1xx … 5xx at 0 … 4, per thread.
    responses: Sharded<[AtomicU64; 5]>,
    failures: AtomicU64,
    connections: AtomicU64,
    duration: Histogram,
}

/// A backend's counters as read at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficSnapshot {
    pub responses: [u64; 5],
    pub failures: u64,
    pub connections: u64,
    pub duration: HistogramSnapshot,
}

impl Traffic {
    /// A response with `status` arrived `elapsed` after the request was sent.
    pub fn response(&self, status: u16, elapsed: Duration) {
        self.responses.local()[class_index(status)].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(elapsed);
    }

    /// A try that got no response.
    pub fn failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An L4 connection opened to the backend.
    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            responses: sum_classes(&self.responses),
            failures: self.failures.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            duration: self.duration.snapshot(),
        }
    }
}

impl TrafficSnapshot {
    /// HTTP requests it was given, answered or not.
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum::<u64>() + self.failures
    }

    /// 5xx responses and tries with no response.
    pub fn errors(&self) -> u64 {
        self.responses[4] + self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_count_by_class_and_errors_include_failures() {
        let t = Traffic::default();
        t.response(200, Duration::from_millis(2));
        t.response(204, Duration::from_millis(2));
        t.response(404, Duration::from_millis(2));
        t.response(503, Duration::from_millis(2));
        t.failure();
        t.connection();
        let s = t.snapshot();
        assert_eq!(s.responses, [0, 2, 0, 1, 1]);
        assert_eq!(s.requests(), 5);
        assert_eq!(s.errors(), 2);
        assert_eq!(s.connections, 1);
        assert_eq!(s.duration.count(), 4);
    }
}
