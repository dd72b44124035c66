//! One backend's health on this node: down by active checks, ejected by
//! outlier detection, its pool in panic, and its slow-start ramp — bits and
//! counters in atomics, read once per candidate on the request path. What
//! sets them is in [`health`](crate::health). Each change of availability
//! is counted, `up` or `down` (`raftlb_backend_health_transitions_total`).

use crate::health::now_ms;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const DOWN: u8 = 1;
const EJECTED: u8 = 2;
const PANIC: u8 = 4;

/// One backend's health on this node; kept across view rebuilds with the
/// backend's other live state.
#[derive(Debug, Default)]
pub struct BackendHealth {
    flags: AtomicU8,
    /// Real-traffic failures since the last success.
    pub(crate) consecutive_failures: AtomicU32,
    /// Ejections not yet forgiven (one is forgiven per base ejection time
    /// spent healthy); the next ejection lasts this many + 1 base times.
    pub(crate) ejections: AtomicU32,
    /// While ejected: when the ejection ends. Otherwise: when the last one ended.
    pub(crate) ejection_mark_ms: AtomicU64,
    /// When the backend last came (back) into service, for slow start; 0: long ago.
    ramp_from_ms: AtomicU64,
    /// Slow start's admission credit, in thousandths of a pick.
    ramp_credit: AtomicU32,
    /// Times it became available, and unavailable, on this node.
    went_up: AtomicU64,
    went_down: AtomicU64,
}

/// Whether a backend with `flags` may be picked.
fn available(flags: u8) -> bool {
    flags & (DOWN | EJECTED) == 0 || flags & PANIC != 0
}

impl BackendHealth {
    /// A backend this node last saw down (committed before a restart)
    /// starts down, until its checks pass `rise` times.
    pub fn starting_down() -> Self {
        let health = BackendHealth::default();
        health.flags.store(DOWN, Ordering::Relaxed);
        health
    }

    /// A backend added to a running pool: in service, ramping up.
    pub fn ramping() -> Self {
        let health = BackendHealth::default();
        health.ramp_from_ms.store(now_ms(), Ordering::Relaxed);
        health
    }

    /// Whether balancers may pick it.
    pub fn available(&self) -> bool {
        available(self.flags.load(Ordering::Relaxed))
    }

    /// How many times it became available, and unavailable, on this node.
    pub fn transitions(&self) -> (u64, u64) {
        (
            self.went_up.load(Ordering::Relaxed),
            self.went_down.load(Ordering::Relaxed),
        )
    }

    /// Sets (`on`) or clears `flag`; returns the flags before. A change of
    /// availability is counted (each from one atomic step, so exactly).
    fn set_flag(&self, flag: u8, on: bool, order: Ordering) -> u8 {
        let before = match on {
            true => self.flags.fetch_or(flag, order),
            false => self.flags.fetch_and(!flag, order),
        };
        let after = if on { before | flag } else { before & !flag };
        match (available(before), available(after)) {
            (false, true) => self.went_up.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.went_down.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        before
    }

    /// Healthy by checks and not ejected, panic or not.
    pub fn healthy(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & (DOWN | EJECTED) == 0
    }

    pub fn is_down(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & DOWN != 0
    }

    pub fn is_ejected(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & EJECTED != 0
    }

    /// Marks it down or up by active checks; true if that changed anything.
    pub(crate) fn set_down(&self, down: bool) -> bool {
        let changed = (self.set_flag(DOWN, down, Ordering::Relaxed) & DOWN != 0) != down;
        if changed && !down && !self.is_ejected() {
            self.ramp_from_ms.store(now_ms(), Ordering::Relaxed);
        }
        changed
    }

    /// Ejects it until `until_ms`; false if another caller already had.
    pub(crate) fn eject(&self, until_ms: u64) -> bool {
        if self.set_flag(EJECTED, true, Ordering::AcqRel) & EJECTED != 0 {
            return false;
        }
        self.ejection_mark_ms.store(until_ms, Ordering::Release);
        true
    }

    /// Ends an ejection whose time is up; true if it ended one.
    pub(crate) fn readmit_if_due(&self, now: u64) -> bool {
        if !self.is_ejected() || self.ejection_mark_ms.load(Ordering::Acquire) > now {
            return false;
        }
        self.ejection_mark_ms.store(now, Ordering::Release);
        self.set_flag(EJECTED, false, Ordering::AcqRel);
        if !self.is_down() {
            self.ramp_from_ms.store(now, Ordering::Relaxed);
        }
        true
    }

    /// Sets or clears the pool's panic on this backend.
    pub(crate) fn set_panic(&self, panic: bool) {
        if (self.flags.load(Ordering::Relaxed) & PANIC != 0) == panic {
            return;
        }
        self.set_flag(PANIC, panic, Ordering::Relaxed);
    }

    /// Slow start: whether this pick may go to the backend, so that while
    /// it ramps it takes [`ramp`](Self::ramp) of the picks that chose it
    /// (each pick earns it that much credit; a whole one admits).
    pub fn admit(&self, window: Duration, now: u64) -> bool {
        let ramp = self.ramp(window, now);
        if ramp >= 1.0 {
            return true;
        }
        let earned = (ramp * 1000.0) as u32;
        let credit = self.ramp_credit.fetch_add(earned, Ordering::Relaxed) + earned;
        if credit < 1000 {
            return false;
        }
        self.ramp_credit.fetch_sub(1000, Ordering::Relaxed);
        true
    }

    /// The share of its normal traffic it takes now, in (0, 1]: 1 outside
    /// a slow-start window, else growing linearly from 10 % across it.
    pub fn ramp(&self, window: Duration, now: u64) -> f64 {
        let from = self.ramp_from_ms.load(Ordering::Relaxed);
        let window_ms = window.as_millis() as u64;
        if from == 0 || window_ms == 0 {
            return 1.0;
        }
        let elapsed = now.saturating_sub(from);
        if elapsed >= window_ms {
            return 1.0;
        }
        (elapsed as f64 / window_ms as f64).max(0.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_or_ejected_is_unavailable_unless_the_pool_panics() {
        let health = BackendHealth::default();
        assert!(health.available());
        assert!(health.set_down(true));
        assert!(!health.set_down(true), "already down");
        assert!(!health.available());
        health.set_panic(true);
        assert!(health.available() && !health.healthy());
        health.set_panic(false);
        health.set_down(false);
        assert!(health.eject(now_ms() + 60_000));
        assert!(!health.eject(now_ms() + 60_000), "ejected once");
        assert!(!health.available());
        assert!(!health.readmit_if_due(now_ms()), "not yet due");
        assert!(health.readmit_if_due(now_ms() + 60_001));
        assert!(health.available());
        // Down; (panic: up, down); up; ejected; readmitted.
        assert_eq!(health.transitions(), (3, 3));
    }

    #[test]
    fn a_returning_backend_ramps_up_across_the_window() {
        let health = BackendHealth::starting_down();
        let window = Duration::from_secs(10);
        health.set_down(false);
        let start = now_ms();
        assert!(health.ramp(window, start) <= 0.11);
        let half = health.ramp(window, start + 5_000);
        assert!((0.45..=0.55).contains(&half), "{half}");
        assert_eq!(health.ramp(window, start + 10_001), 1.0);
        assert_eq!(health.ramp(Duration::ZERO, start), 1.0, "no slow start");
        let admitted = (0..1000).filter(|_| health.admit(window, start + 2_500)).count();
        assert!(
            (240..=260).contains(&admitted),
            "a quarter of the picks: {admitted}"
        );
        assert!(health.admit(window, start + 10_001));
    }
}
