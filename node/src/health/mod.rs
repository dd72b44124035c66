//! Which backends may take new work, as this node sees it.
//!
//! A backend is skipped by every balancer while it is **down** (this node's
//! active checks failed `fall` times in a row: [`checker`]) or **ejected**
//! (real traffic failed too often in a row: [`outlier`]) — unless its pool
//! is in **panic** (fewer healthy backends than the pool's panic threshold),
//! when health is ignored and traffic spreads over all enabled backends.
//! These are bits of one atomic per backend
//! ([`BackendHealth`](crate::backend::health::BackendHealth)), so the
//! request path pays one load per candidate.
//!
//! A backend coming back (checks pass `rise` times, an ejection ends, or it
//! is newly added) ramps up over the pool's `slow_start` window.
//! [`upkeep`] ends ejections, sets and clears panic and refills the retry
//! budgets ([`retry_budget`]); [`checker`] runs the probes ([`probe`]) and
//! commits each transition through Raft, so every node's verdicts are
//! visible in `ctl backend list` and a restarted node starts from its last.

pub mod checker;
pub mod outlier;
pub mod probe;
pub mod retry_budget;
pub mod upkeep;

use retry_budget::RetryBudget;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

/// Milliseconds on a monotonic clock that starts with the process (never 0:
/// 0 means "never" in the fields below).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}

/// A pool's failure-handling state on this node, kept across view rebuilds
/// while the pool exists.
#[derive(Debug, Default)]
pub struct PoolRuntime {
    pub retry_budget: RetryBudget,
    /// Whether the pool is in panic (see the module doc).
    pub panic: AtomicBool,
    pub ejections_total: AtomicU64,
    pub retries_total: AtomicU64,
    /// Retries the budget refused.
    pub retries_refused_total: AtomicU64,
}
