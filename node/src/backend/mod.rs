//! A backend's live state on this node, which outlives view rebuilds: the
//! work it has in hand (open L4 connections plus in-flight L7 requests),
//! the most it may have (`max_connections`), its [`health`], its
//! [`latency`] and its [`traffic`]. Its settings (address, weight, admin state) are in the
//! pool's spec and may change; this is what the node learns by using it.
//!
//! Work is counted by an [`ActiveGuard`], taken only while the backend has
//! room ([`Backend::try_track`]); dropping the guard frees the slot and
//! wakes one piece of work waiting for it ([`queue`]): first work pinned to
//! this backend (a sticky session's), else work waiting for any backend of
//! the pool.

pub mod health;
pub mod latency;
pub mod queue;
pub mod traffic;

use health::BackendHealth;
use latency::Latency;
use queue::WaitQueue;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;
use traffic::Traffic;

/// One backend of one pool, as this node uses it.
#[derive(Debug)]
pub struct Backend {
    address: SocketAddr,
    /// Open L4 connections plus in-flight L7 requests.
    active: AtomicUsize,
    /// The most `active` may be; 0: no limit.
    limit: AtomicUsize,
    health: BackendHealth,
    latency: Latency,
    traffic: Traffic,
    /// The pool's queue, told when a slot frees here.
    queue: Arc<WaitQueue>,
    /// Work waiting for this backend alone, and the signal it waits on.
    pinned: AtomicUsize,
    freed: Notify,
}

impl Backend {
    /// A backend of no pool in particular (its own queue), healthy.
    pub fn new(address: SocketAddr) -> Self {
        Backend::in_pool(address, BackendHealth::default(), Arc::default())
    }

    /// A backend of the pool whose wait queue is `queue`.
    pub fn in_pool(address: SocketAddr, health: BackendHealth, queue: Arc<WaitQueue>) -> Self {
        Backend {
            address,
            active: AtomicUsize::new(0),
            limit: AtomicUsize::new(0),
            health,
            latency: Latency::default(),
            traffic: Traffic::default(),
            queue,
            pinned: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Sets `max_connections` (0: none). Work already in hand stays; waiting
    /// work looks again, in case the limit rose.
    pub fn set_limit(&self, limit: usize) {
        if self.limit.swap(limit, Ordering::SeqCst) != limit {
            self.freed.notify_waiters();
            self.queue.wake_all();
        }
    }

    /// Whether it may take one more piece of work (under `max_connections`).
    pub fn has_room(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        limit == 0 || self.active.load(Ordering::Relaxed) < limit
    }

    /// Response (L7) or connect (L4) latency, for `peak_ewma`.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// What it has served through this node.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Whether this node may send new work here: every balancer skips a
    /// backend that is not (health checks and outlier ejection decide).
    pub fn available(&self) -> bool {
        self.health.available()
    }

    pub fn health(&self) -> &BackendHealth {
        &self.health
    }

    /// Counts one connection or request against this backend until the
    /// guard drops, if it has room for it.
    pub fn try_track(self: &Arc<Self>) -> Option<ActiveGuard> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(ActiveGuard(Arc::clone(self)))
    }

    /// Counts one piece of work whatever the limit (tests load backends so).
    #[cfg(test)]
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(Arc::clone(self))
    }

    /// Work pinned to this backend starts or stops waiting for it.
    fn pin(&self, waiting: bool) {
        match waiting {
            true => self.pinned.fetch_add(1, Ordering::SeqCst),
            false => self.pinned.fetch_sub(1, Ordering::SeqCst),
        };
    }

    /// A slot freed: wake work pinned here first, else the pool's.
    fn slot_freed(&self) {
        if self.pinned.load(Ordering::SeqCst) > 0 {
            self.freed.notify_one();
        } else {
            self.queue.wake_one();
        }
    }
}

/// One connection or request counted against a backend; dropping it frees
/// the slot.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Backend>);

impl ActiveGuard {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        if self.0.limit.load(Ordering::Relaxed) != 0 {
            self.0.slot_freed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(limit: usize) -> Arc<Backend> {
        let backend = Arc::new(Backend::new("127.0.0.1:1".parse().unwrap()));
        backend.set_limit(limit);
        backend
    }

    #[test]
    fn a_full_backend_takes_no_more_until_a_slot_frees() {
        let b = backend(2);
        let first = b.try_track().expect("room");
        let _second = b.try_track().expect("room");
        assert!(!b.has_room());
        assert!(b.try_track().is_none(), "full");
        drop(first);
        assert!(b.has_room());
        assert!(b.try_track().is_some());
    }

    #[test]
    fn no_limit_takes_everything() {
        let b = backend(0);
        let guards: Vec<_> = (0..1000).map(|_| b.try_track().expect("no limit")).collect();
        assert_eq!(b.active(), 1000);
        drop(guards);
        assert_eq!(b.active(), 0);
    }
}
