//! How fast one node learns new sessions for one pool (`learn_rate` per
//! second, `learn_burst` at once): a clock-free GCRA (the generic cell rate
//! algorithm, a token bucket kept as one time) that every worker shares
//! through one atomic. A new session past the pace is served without
//! stickiness, so a client inventing keys costs Raft at most this much.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// One pool's pace on this node.
#[derive(Debug, Default)]
pub struct LearnRate {
    /// When the sessions admitted so far will have been paid for, at the
    /// rate (nanoseconds on the caller's clock).
    paid_until: AtomicU64,
    /// Nanoseconds between two sessions at the rate.
    interval: AtomicU64,
    /// How far `paid_until` may run ahead of now: the burst.
    tolerance: AtomicU64,
}

impl LearnRate {
    pub fn new(rate: u32, burst: u32) -> Self {
        let pace = LearnRate::default();
        pace.set(rate, burst);
        pace
    }

    /// Takes a new rate and burst (the policy changed); what was admitted
    /// stays paid for.
    pub fn set(&self, rate: u32, burst: u32) {
        let interval = NANOS_PER_SECOND / u64::from(rate.max(1));
        self.interval.store(interval, Ordering::Relaxed);
        self.tolerance.store(
            interval.saturating_mul(u64::from(burst.max(1))),
            Ordering::Relaxed,
        );
    }

    /// Whether one more session may be learned at `now_ns` (a monotonic
    /// clock, nanoseconds); it is counted if so.
    pub fn admit(&self, now_ns: u64) -> bool {
        let interval = self.interval.load(Ordering::Relaxed);
        let tolerance = self.tolerance.load(Ordering::Relaxed);
        let mut paid_until = self.paid_until.load(Ordering::Relaxed);
        loop {
            let next = paid_until.max(now_ns).saturating_add(interval);
            if next - now_ns > tolerance {
                return false;
            }
            match self.paid_until.compare_exchange_weak(
                paid_until,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => paid_until = current,
            }
        }
    }
}

/// Nanoseconds on a monotonic clock that starts with the process.
pub fn monotonic_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn admitted(pace: &LearnRate, from_ns: u64, to_ns: u64, step_ns: u64) -> u64 {
        (from_ns..to_ns)
            .step_by(step_ns as usize)
            .filter(|now| pace.admit(*now))
            .count() as u64
    }

    #[test]
    fn a_burst_then_the_rate() {
        let pace = LearnRate::new(100, 20);
        // At one instant: the burst and not one more.
        assert_eq!((0..50).filter(|_| pace.admit(0)).count(), 20);
        // Offered every 0.1 ms for 10 s: 100 a second.
        let later = admitted(&pace, MS / 10, 10_000 * MS, MS / 10);
        assert!((999..=1001).contains(&later), "{later} in 10 s");
    }

    #[test]
    fn an_idle_pace_fills_up_to_the_burst_only() {
        let pace = LearnRate::new(1000, 5);
        assert_eq!((0..10).filter(|_| pace.admit(0)).count(), 5);
        // An hour idle gives back the burst, not an hour's worth.
        let hour = 3_600_000 * MS;
        assert_eq!((0..10).filter(|_| pace.admit(hour)).count(), 5);
    }

    #[test]
    fn any_window_admits_at_most_burst_plus_rate_times_length() {
        let pace = LearnRate::new(250, 50);
        // Offered in bursts at odd moments.
        let mut at = Vec::new();
        let mut now = 0;
        for i in 0..20_000u64 {
            now += (i * 7919) % (3 * MS);
            if pace.admit(now) {
                at.push(now);
            }
        }
        for (i, start) in at.iter().enumerate() {
            for window_ms in [1, 100, 1000, 5000] {
                let end = start + window_ms * MS;
                let inside = at[i..].iter().take_while(|t| **t < end).count() as u64;
                assert!(
                    inside <= 50 + 250 * window_ms / 1000 + 1,
                    "{inside} in {window_ms} ms"
                );
            }
        }
    }

    #[test]
    fn a_new_rate_applies_at_once() {
        let pace = LearnRate::new(10, 1);
        assert!(pace.admit(0));
        assert!(!pace.admit(MS));
        pace.set(1_000_000, 1_000_000);
        assert!(pace.admit(2 * MS));
        // Extremes neither overflow nor stall.
        let pace = LearnRate::new(1, 1_000_000);
        assert!(pace.admit(u64::MAX - 1));
    }

    #[test]
    fn workers_sharing_a_pace_admit_the_burst_between_them() {
        let pace = std::sync::Arc::new(LearnRate::new(1, 1000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pace = std::sync::Arc::clone(&pace);
                std::thread::spawn(move || (0..1000).filter(|_| pace.admit(5 * MS)).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
