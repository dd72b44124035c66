//! What the sticky tables report: hits, misses and re-sticks on the data
//! plane, proposals and their failures, new sessions not learned (per pool:
//! its `learn_rate` was spent) or shed (their share of the proposal queue
//! was full), and the replication lag (from the moment a node stuck a
//! session to the moment this node applied it), summarised by `raftlb ctl
//! sticky stats` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lag samples kept for the percentiles (the most recent ones).
const LAG_SAMPLES: usize = 4096;

/// Counters shared by the data plane, the state machine and the admin API.
#[derive(Debug, Default)]
pub struct StickyMetrics {
    /// Requests or connections sent to the backend their session names.
    pub hits: AtomicU64,
    /// New sessions.
    pub misses: AtomicU64,
    /// Sessions moved because their backend could not take them.
    pub resticks: AtomicU64,
    /// Sessions this node proposed (new, moved or refreshed).
    pub proposals: AtomicU64,
    /// Proposals refused or not confirmed.
    pub failed_proposals: AtomicU64,
    /// Sessions served but not proposed: the sticky share of the proposal
    /// queue was full.
    pub shed_proposals: AtomicU64,
    /// Per pool: new sessions served without stickiness because this
    /// node's `learn_rate` for the pool was spent.
    rate_limited: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    lags: Mutex<Lags>,
}

#[derive(Debug, Default)]
struct Lags {
    samples: Vec<u32>,
    next: usize,
    /// Proposals counted at the last rate sample, and when.
    last_rate: Option<(u64, u64)>,
    rate: f64,
}

/// A summary of the recent replication lag, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LagSummary {
    pub samples: usize,
    pub p50_ms: u32,
    pub p99_ms: u32,
    pub max_ms: u32,
}

impl StickyMetrics {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of `pool`'s sessions not learned for the rate (made on
    /// first use, kept for the life of the process like every counter).
    pub fn rate_limited(&self, pool: &str) -> Arc<AtomicU64> {
        let mut pools = self.rate_limited.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(pools.entry(pool.to_string()).or_default())
    }

    /// Every pool's count of sessions not learned for the rate.
    pub fn rate_limited_by_pool(&self) -> Vec<(String, u64)> {
        let pools = self.rate_limited.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .iter()
            .map(|(pool, n)| (pool.clone(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Records that a session stuck at `at_ms` has just been applied here.
    pub fn applied(&self, at_ms: u64) {
        let lag = now_ms().saturating_sub(at_ms);
        let mut lags = self.lags.lock().unwrap_or_else(PoisonError::into_inner);
        let sample = u32::try_from(lag).unwrap_or(u32::MAX);
        if lags.samples.len() < LAG_SAMPLES {
            lags.samples.push(sample);
        } else {
            let next = lags.next;
            lags.samples[next] = sample;
        }
        lags.next = (lags.next + 1) % LAG_SAMPLES;
    }

    pub fn lag(&self) -> LagSummary {
        let mut samples = self
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .samples
            .clone();
        if samples.is_empty() {
            return LagSummary::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        LagSummary {
            samples: samples.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: samples[samples.len() - 1],
        }
    }

    /// Updates the proposal rate; called about once a second.
    pub fn sample_rate(&self) {
        let (proposals, now) = (self.proposals.load(Ordering::Relaxed), now_ms());
        let mut lags = self.lags.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((before, then)) = lags.last_rate
            && now > then
        {
            lags.rate = proposals.saturating_sub(before) as f64 * 1000.0 / (now - then) as f64;
        }
        lags.last_rate = Some((proposals, now));
    }

    /// Proposals per second over the last sample interval.
    pub fn proposal_rate(&self) -> f64 {
        self.lags.lock().unwrap_or_else(PoisonError::into_inner).rate
    }
}

/// Wall-clock milliseconds since the Unix epoch: the time sessions carry.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
