//! A backend's latency estimate, peak-sensitive and decaying (Finagle's
//! peak EWMA, as Linkerd uses it), fed by every try against the backend of
//! a pool that balances by it, and read by the `peak_ewma` balancer.
//!
//! A sample above the estimate replaces it at once (a backend turning slow
//! is avoided from its first slow answer); a sample below it pulls it down
//! with weight `1 − e^(−Δt/τ)`, Δt the time since the previous sample and
//! τ = 10 s. Between samples the estimate decays towards zero with the same
//! τ — what Finagle's and Linkerd's reads do — so an idle backend that was
//! slow is tried again in time; a sample is weighed against that decayed
//! value, so one below it never raises it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The decay time constant τ, in nanoseconds.
pub const TAU_NANOS: f64 = 10e9;

/// A backend's peak-EWMA latency, lock-free: the estimate (f64
/// nanoseconds, as bits) and when it was last sampled (nanoseconds since
/// [`now`]'s process epoch, 0 before the first sample). Concurrent samples
/// each apply in full; one racing the first sample may see a zero estimate
/// for an instant.
#[derive(Debug, Default)]
pub struct Latency {
    estimate: AtomicU64,
    stamp: AtomicU64,
}

/// Nanoseconds since this process's first call, never 0.
pub fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

impl Latency {
    /// Records a sample taken now.
    pub fn record(&self, rtt: Duration) {
        self.observe(rtt, now());
    }

    /// Records a sample of `rtt` taken at `now` (see [`now`]).
    pub fn observe(&self, rtt: Duration, now: u64) {
        let rtt = rtt.as_nanos() as f64;
        let last = self.stamp.swap(now.max(1), Ordering::AcqRel);
        let decay = (-(now.saturating_sub(last) as f64) / TAU_NANOS).exp();
        let _ = self
            .estimate
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let current = f64::from_bits(bits) * decay;
                let next = if last == 0 || rtt > current {
                    rtt
                } else {
                    current * decay + rtt * (1.0 - decay)
                };
                Some(next.to_bits())
            });
    }

    /// The estimate at `now` in nanoseconds, decayed since the last
    /// sample; `None` before the first.
    pub fn estimate(&self, now: u64) -> Option<f64> {
        let last = self.stamp.load(Ordering::Acquire);
        if last == 0 {
            return None;
        }
        let current = f64::from_bits(self.estimate.load(Ordering::Acquire));
        Some(current * (-(now.saturating_sub(last) as f64) / TAU_NANOS).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_peak_replaces_the_estimate_and_lower_samples_decay_it_slowly() {
        let l = Latency::default();
        assert_eq!(l.estimate(S), None);
        l.observe(ms(10), S);
        assert_eq!(l.estimate(S), Some(10.0 * MS as f64));
        l.observe(ms(50), S + MS);
        assert_eq!(
            l.estimate(S + MS),
            Some(50.0 * MS as f64),
            "a peak counts at once"
        );
        // 1 ms later a 10 ms sample has weight 1 - e^(-1e-4): barely moves it.
        l.observe(ms(10), S + 2 * MS);
        let e = l.estimate(S + 2 * MS).unwrap() / MS as f64;
        assert!((49.9..50.0).contains(&e), "{e}");
        // τ later it reads 1/e of that, and a 10 ms sample then has weight 1 - 1/e.
        let stored = l.estimate(S + 2 * MS).unwrap() / MS as f64;
        let t = S + 2 * MS + 10 * S;
        let seen = l.estimate(t).unwrap() / MS as f64;
        assert!((seen - stored / std::f64::consts::E).abs() < 1e-9, "{seen}");
        l.observe(ms(10), t);
        let e = l.estimate(t).unwrap() / MS as f64;
        let expected = seen / std::f64::consts::E + 10.0 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((e - expected).abs() < 1e-9, "{e} vs {expected}");
        assert!(e < seen && e > 10.0);
        // And with no sample at all it decays towards zero.
        let later = l.estimate(t + 20 * S).unwrap() / MS as f64;
        assert!(later < e / 7.0, "{later}");
    }
}
