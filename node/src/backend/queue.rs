//! A pool's wait queue, HAProxy's `maxqueue`/`timeout queue`: work that
//! finds every backend it may use at its `max_connections` waits here, at
//! most `max_queue` pieces of it per pool and node, each for at most
//! `queue_timeout`, and is refused (`503`) past either.
//!
//! Waiting is a [`Place`] in the queue: work pinned to one backend (a
//! sticky session's) waits on that backend's signal, other work on the
//! pool's. A freed slot wakes one waiter, pinned ones first
//! ([`Backend`]'s guard). A waiter is counted before it looks again, and a
//! freed slot is counted before the waiters are read (both sequentially
//! consistent), so a slot that frees while a waiter looks either is seen
//! or leaves a wake-up (a [`Notify`] permit) for it.

use super::Backend;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why queued work was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueRefusal {
    #[error("every backend is at max_connections and the queue is full ({0} waiting)")]
    Full(usize),
    #[error("every backend stayed at max_connections for queue_timeout ({0:?})")]
    Timeout(Duration),
}

/// One pool's waiting work on this node; kept across view rebuilds while
/// the pool exists.
#[derive(Debug, Default)]
pub struct WaitQueue {
    /// All waiting work, pinned or not.
    queued: AtomicUsize,
    /// Of which waiting for any backend.
    waiting_any: AtomicUsize,
    any: Notify,
    /// Work refused because the queue was full.
    pub refused_full_total: AtomicU64,
    /// Work refused after waiting `queue_timeout`.
    pub timed_out_total: AtomicU64,
}

impl WaitQueue {
    /// How much work is waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Takes a place for work that found its backends full, if fewer than
    /// `max` wait, to wait until `timeout` from now.
    pub fn join(&self, max: usize, timeout: Duration) -> Result<Place<'_>, QueueRefusal> {
        let joined = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1));
        if let Err(waiting) = joined {
            self.refused_full_total.fetch_add(1, Ordering::Relaxed);
            return Err(QueueRefusal::Full(waiting));
        }
        Ok(Place {
            queue: self,
            pinned: None,
            counted: false,
            timeout,
            deadline: Instant::now() + timeout,
        })
    }

    /// Wakes one piece of work waiting for any backend, if there is one.
    pub(super) fn wake_one(&self) {
        if self.waiting_any.load(Ordering::SeqCst) > 0 {
            self.any.notify_one();
        }
    }

    /// Wakes all work waiting for any backend (a limit changed).
    pub(super) fn wake_all(&self) {
        self.any.notify_waiters();
    }
}

/// A piece of work's place in the queue, given up when dropped.
#[derive(Debug)]
pub struct Place<'a> {
    queue: &'a WaitQueue,
    /// What it waits for: one backend, or any (`None`).
    pinned: Option<Arc<Backend>>,
    /// Whether it is counted among the waiters of `pinned` (or of the pool).
    counted: bool,
    timeout: Duration,
    deadline: Instant,
}

impl Place<'_> {
    /// Listens for a slot at `pinned` (or at any backend of the pool, for
    /// `None`); true if it was not listening for that already, when the
    /// caller looks for a free slot once more before it [waits](Self::wait).
    pub fn listen(&mut self, pinned: Option<&Arc<Backend>>) -> bool {
        let same = match (&self.pinned, pinned) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same && self.counted {
            return false;
        }
        self.uncount();
        self.pinned = pinned.cloned();
        match &self.pinned {
            Some(backend) => backend.pin(true),
            None => {
                self.queue.waiting_any.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.counted = true;
        true
    }

    /// Waits for the slot it listens for, until the place's deadline.
    pub async fn wait(&self) -> Result<(), QueueRefusal> {
        let notify = match &self.pinned {
            Some(backend) => &backend.freed,
            None => &self.queue.any,
        };
        // A slot freed since `listen` left a permit: this returns at once.
        if tokio::time::timeout_at(self.deadline, notify.notified())
            .await
            .is_err()
        {
            self.queue.timed_out_total.fetch_add(1, Ordering::Relaxed);
            return Err(QueueRefusal::Timeout(self.timeout));
        }
        Ok(())
    }

    fn uncount(&mut self) {
        if !self.counted {
            return;
        }
        match &self.pinned {
            Some(backend) => backend.pin(false),
            None => {
                self.queue.waiting_any.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.counted = false;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.uncount();
        self.queue.queued.fetch_sub(1, Ordering::SeqCst);
    }
}
