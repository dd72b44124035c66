//! A pool's retry budget (Finagle's and Linkerd's idea): every request
//! deposits `budget_percent` of a token, every retry withdraws a whole one,
//! and [`upkeep`](super::upkeep) adds `min_per_second` tokens a second. So
//! retries add at most that percentage to the load (plus the floor), and
//! when every backend fails, clients see failures instead of a retry storm.

use raftlb_config::RetryPolicy;
use std::sync::atomic::{AtomicI64, Ordering};

/// Thousandths of a token.
const TOKEN: i64 = 1000;

/// The tokens a pool has for retries.
#[derive(Debug, Default)]
pub struct RetryBudget {
    milli_tokens: AtomicI64,
}

impl RetryBudget {
    /// Most tokens saved up: ten seconds of the floor, and a hundred more
    /// (a busy pool's in-flight requests when one backend dies).
    fn cap(policy: &RetryPolicy) -> i64 {
        (i64::from(policy.min_per_second) * 10 + 100) * TOKEN
    }

    /// A request's first try.
    pub fn deposit(&self, policy: &RetryPolicy) {
        self.add(i64::from(policy.budget_percent) * TOKEN / 100, policy);
    }

    /// `elapsed_ms` of the per-second floor.
    pub fn refill(&self, policy: &RetryPolicy, elapsed_ms: u64) {
        self.add(i64::from(policy.min_per_second) * elapsed_ms as i64, policy);
    }

    fn add(&self, amount: i64, policy: &RetryPolicy) {
        if amount == 0 {
            return;
        }
        let cap = Self::cap(policy);
        // A full budget (the usual state) is only read: every worker
        // deposits at every request, and a write would move the counter's
        // cache line between them.
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t != cap).then(|| (t + amount).min(cap))
            });
    }

    /// Takes a token for one retry; false when there is none.
    pub fn withdraw(&self) -> bool {
        self.milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= TOKEN).then_some(t - TOKEN)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_requests_plus_the_floor() {
        let policy = RetryPolicy {
            attempts: 1,
            budget_percent: 20,
            min_per_second: 0,
        };
        let budget = RetryBudget::default();
        assert!(!budget.withdraw(), "an empty budget refuses");
        for _ in 0..100 {
            budget.deposit(&policy);
        }
        let retries = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(retries, 20);

        let floor = RetryPolicy {
            min_per_second: 3,
            ..policy
        };
        budget.refill(&floor, 2_000);
        assert_eq!((0..100).filter(|_| budget.withdraw()).count(), 6);
        budget.refill(&floor, 3_600_000);
        assert_eq!((0..1000).filter(|_| budget.withdraw()).count(), 130, "capped");
    }
}
