//! What a listener and a pool served on this node, for `/metrics`: HTTP
//! responses by status class (proxied or local), the listener's request
//! durations, and its connections (accepted; open now, active or idle).
//! Fed by each request's [`Record`](crate::access_log::Record) and by the
//! connection's [`Open`] guard; kept across view rebuilds while the
//! listener or pool exists. What changes at every request is counted per
//! thread ([`shard`](crate::shard)) and summed by the reader.

use crate::histogram::{Histogram, HistogramSnapshot};
use crate::shard::Sharded;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The index of `status`'s class (1xx … 5xx) in a `[_; 5]`.
pub fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// One listener's counters.
#[derive(Debug, Default)]
pub struct ListenerTraffic {
    cells: Sharded<ListenerCells>,
    duration: Histogram,
    accepted: AtomicU64,
}

/// One shard of a listener's per-request counters. A connection may open
/// on one thread's shard and close on another's: the gauges add up across
/// the shards, not within one.
#[derive(Debug, Default)]
struct ListenerCells {
    responses: [AtomicU64; 5],
    active: AtomicI64,
    idle: AtomicI64,
}

/// A listener's counters as read at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenerSnapshot {
    pub responses: [u64; 5],
    pub duration: HistogramSnapshot,
    pub accepted: u64,
    pub active: i64,
    pub idle: i64,
}

impl ListenerTraffic {
    /// A response with `status` finished `elapsed` after its head was read.
    pub fn response(&self, status: u16, elapsed: Duration) {
        self.cells.local().responses[class_index(status)].fetch_add(1, Relaxed);
        self.duration.observe(elapsed);
    }

    /// An accepted connection, idle (HTTP, before its first request) or
    /// active (L4) until the guard drops.
    pub fn open(self: &Arc<Self>, active: bool) -> Open {
        self.accepted.fetch_add(1, Relaxed);
        let open = Open {
            traffic: Arc::clone(self),
            active: AtomicBool::new(active),
        };
        open.gauge(active).fetch_add(1, Relaxed);
        open
    }

    pub fn snapshot(&self) -> ListenerSnapshot {
        let mut snapshot = ListenerSnapshot {
            duration: self.duration.snapshot(),
            accepted: self.accepted.load(Relaxed),
            ..ListenerSnapshot::default()
        };
        for cells in self.cells.all() {
            add_classes(&mut snapshot.responses, &cells.responses);
            snapshot.active += cells.active.load(Relaxed);
            snapshot.idle += cells.idle.load(Relaxed);
        }
        snapshot
    }
}

/// An open connection of a listener, counted active or idle until dropped.
#[derive(Debug)]
pub struct Open {
    traffic: Arc<ListenerTraffic>,
    active: AtomicBool,
}

impl Open {
    /// Moves the connection to `active` (a request started) or idle (its
    /// last request in flight ended).
    pub fn set_active(&self, active: bool) {
        if self.active.swap(active, Relaxed) != active {
            self.gauge(!active).fetch_sub(1, Relaxed);
            self.gauge(active).fetch_add(1, Relaxed);
        }
    }

    fn gauge(&self, active: bool) -> &AtomicI64 {
        let cells = self.traffic.cells.local();
        match active {
            true => &cells.active,
            false => &cells.idle,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge(self.active.load(Relaxed)).fetch_sub(1, Relaxed);
    }
}

/// One pool's HTTP responses by status class, proxied or local.
#[derive(Debug, Default)]
pub struct PoolTraffic {
    responses: Sharded<[AtomicU64; 5]>,
}

impl PoolTraffic {
    pub fn response(&self, status: u16) {
        self.responses.local()[class_index(status)].fetch_add(1, Relaxed);
    }

    pub fn responses(&self) -> [u64; 5] {
        sum_classes(&self.responses)
    }
}

/// Responses by class, summed over the shards.
pub fn sum_classes(responses: &Sharded<[AtomicU64; 5]>) -> [u64; 5] {
    let mut total = [0; 5];
    for shard in responses.all() {
        add_classes(&mut total, shard);
    }
    total
}

/// Adds one shard's responses by class to `total`.
fn add_classes(total: &mut [u64; 5], shard: &[AtomicU64; 5]) {
    for (total, cell) in total.iter_mut().zip(shard) {
        *total += cell.load(Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_move_between_active_and_idle_and_leave_no_trace() {
        let traffic = Arc::new(ListenerTraffic::default());
        let http = traffic.open(false);
        let tcp = traffic.open(true);
        assert_eq!((traffic.snapshot().active, traffic.snapshot().idle), (1, 1));
        http.set_active(true);
        http.set_active(true);
        assert_eq!((traffic.snapshot().active, traffic.snapshot().idle), (2, 0));
        http.set_active(false);
        drop((http, tcp));
        let s = traffic.snapshot();
        assert_eq!((s.active, s.idle, s.accepted), (0, 0, 2));
    }

    #[test]
    fn responses_count_by_class() {
        let traffic = ListenerTraffic::default();
        for status in [101, 200, 204, 404, 503, 999] {
            traffic.response(status, Duration::from_millis(1));
        }
        let s = traffic.snapshot();
        assert_eq!(s.responses, [1, 2, 0, 1, 2]);
        assert_eq!(s.duration.count(), 6);
    }
}
