//! Passive health checking on real traffic, Envoy's outlier detection:
//! after `consecutive_failures` failures in a row (connect error, timeout,
//! 5xx) a backend is ejected for the base ejection time times the number of
//! ejections it has not yet been forgiven (one is forgiven per base time
//! spent healthy), at most `max_ejection_time`. No ejection takes the
//! ejected share of the pool's enabled backends past
//! `max_ejection_percent`, except that one backend may always be ejected.
//! [`upkeep`](super::upkeep) readmits it when its time is up.

use super::now_ms;
use crate::backend::Backend;
use crate::view::PoolView;
use std::sync::atomic::Ordering;

/// What one try against a backend came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// A backend's HTTP status: 5xx is a failure.
    pub fn of_status(status: http::StatusCode) -> Outcome {
        match status.is_server_error() {
            true => Outcome::Failure,
            false => Outcome::Success,
        }
    }
}

/// Counts `outcome` against `backend` of `pool`, ejecting it when it has
/// failed too often in a row.
pub fn record(pool: &PoolView, backend: &Backend, outcome: Outcome) {
    let Some(policy) = &pool.spec.health.outlier else {
        return;
    };
    let health = backend.health();
    if outcome == Outcome::Success {
        if health.consecutive_failures.load(Ordering::Relaxed) != 0 {
            health.consecutive_failures.store(0, Ordering::Relaxed);
        }
        return;
    }
    let failures = health.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
    if failures < policy.consecutive_failures || health.is_ejected() {
        return;
    }
    let enabled = pool.backends.len();
    let ejected = pool.backends.iter().filter(|b| b.health().is_ejected()).count();
    if ejected > 0 && (ejected + 1) * 100 > policy.max_ejection_percent as usize * enabled {
        tracing::warn!(pool = %pool.spec.name, backend = %backend.address(), ejected, enabled,
            "not ejected: max_ejection_percent reached");
        return;
    }
    let now = now_ms();
    let base = policy.base_ejection_time.as_millis() as u64;
    let healthy_since = health.ejection_mark_ms.load(Ordering::Relaxed);
    let forgiven = match healthy_since {
        0 => 0,
        since => (now.saturating_sub(since) / base.max(1)) as u32,
    };
    let previous = health.ejections.load(Ordering::Relaxed).saturating_sub(forgiven);
    let ejections = previous.saturating_add(1);
    let duration = base
        .saturating_mul(u64::from(ejections))
        .min(policy.max_ejection_time.as_millis() as u64);
    if health.eject(now + duration) {
        health.ejections.store(ejections, Ordering::Relaxed);
        health.consecutive_failures.store(0, Ordering::Relaxed);
        pool.runtime.ejections_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(pool = %pool.spec.name, backend = %backend.address(), failures, ejections,
            seconds = duration as f64 / 1000.0, "backend ejected (outlier detection)");
    }
}
