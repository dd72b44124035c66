//! The health upkeep, every [`TICK`] on the control plane's runtime: ends
//! ejections whose time is up, puts pools into panic and out of it, and
//! refills the retry budgets. Nothing here touches Raft.

use super::now_ms;
use crate::view::{PoolView, SharedView};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the upkeep runs: the granularity of readmission.
pub const TICK: Duration = Duration::from_millis(100);

/// Runs until the returned task is aborted.
pub fn start(view: SharedView) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = now_ms();
        loop {
            tick.tick().await;
            let now = now_ms();
            let view = view.load();
            for pool in view.pools() {
                tend(pool, now, now - last);
            }
            last = now;
        }
    })
}

/// One pool's upkeep at `now`, `elapsed_ms` after the last.
pub fn tend(pool: &PoolView, now: u64, elapsed_ms: u64) {
    for backend in &pool.backends {
        if backend.health().readmit_if_due(now) {
            tracing::info!(pool = %pool.spec.name, backend = %backend.address(), "backend readmitted after ejection");
        }
    }
    let enabled = pool.backends.len();
    let healthy = pool.backends.iter().filter(|b| b.health().healthy()).count();
    let threshold = pool.spec.health.panic_threshold as usize;
    let panic = enabled > 0 && healthy * 100 < threshold * enabled;
    if pool.runtime.panic.swap(panic, Ordering::Relaxed) != panic {
        match panic {
            true => tracing::warn!(pool = %pool.spec.name, healthy, enabled, threshold,
                "pool in panic: too few healthy backends, traffic goes to all of them"),
            false => tracing::info!(pool = %pool.spec.name, healthy, enabled, "pool out of panic"),
        }
    }
    for backend in &pool.backends {
        backend.health().set_panic(panic);
    }
    pool.runtime
        .retry_budget
        .refill(&pool.spec.health.retry, elapsed_ms);
}
