//! How a pool deals with failing backends, and the health verdicts the
//! cluster remembers.
//!
//! - [`PoolHealth`]: a pool's settings — active checks ([`HealthCheck`]),
//!   passive outlier ejection ([`OutlierDetection`]), the panic threshold,
//!   slow start and request retries ([`RetryPolicy`]).
//! - [`HealthReports`]: the last verdict each node's active checks reached on
//!   each backend, committed through Raft as transitions happen (not every
//!   probe), so `ctl backend list` shows every node's view and a restarted
//!   node starts from what it last knew.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A pool's handling of failing backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolHealth {
    /// `[pool.health_check]`: probes each node sends for itself.
    pub check: Option<HealthCheck>,
    /// `[pool.outlier]`: ejection on consecutive failures of real traffic.
    pub outlier: Option<OutlierDetection>,
    /// When fewer than this percentage of the pool's enabled backends are
    /// healthy, health is ignored and traffic spreads over all of them
    /// (Envoy's panic threshold): overloading the few healthy ones would
    /// take them down too. 0 turns it off.
    pub panic_threshold: u32,
    /// A backend that comes back (or is added) ramps its share of new work
    /// up over this window. Zero: at once.
    pub slow_start: Duration,
    /// `[pool.retry]`: requests retried on another backend.
    pub retry: RetryPolicy,
}

impl Default for PoolHealth {
    fn default() -> Self {
        PoolHealth {
            check: None,
            outlier: None,
            panic_threshold: PoolHealth::DEFAULT_PANIC_THRESHOLD,
            slow_start: Duration::ZERO,
            retry: RetryPolicy::default(),
        }
    }
}

impl PoolHealth {
    pub const DEFAULT_PANIC_THRESHOLD: u32 = 50;
}

/// An active health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Time between two probes of one backend (each node adds up to 10 %
    /// jitter so probes do not align).
    pub interval: Duration,
    /// Time a probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_RISE: u32 = 2;
    pub const DEFAULT_FALL: u32 = 3;
}

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// The backend accepts a TCP connection.
    Tcp,
    /// The backend answers an HTTP/1.1 request as expected.
    Http(HttpProbe),
}

/// An HTTP probe: a request and what the answer must look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProbe {
    pub method: String,
    pub path: String,
    /// The `Host` header; without it, the backend's address.
    pub host: Option<String>,
    /// Accepted status codes, inclusive.
    pub expect_status: (u16, u16),
    /// A string the body must contain.
    pub expect_body: Option<String>,
}

/// Envoy-style passive health checking on real traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// Consecutive failures (connect errors, timeouts, 5xx) that eject.
    pub consecutive_failures: u32,
    /// The first ejection lasts this long; each further one a multiple.
    pub base_ejection_time: Duration,
    /// No ejection lasts longer.
    pub max_ejection_time: Duration,
    /// Never eject when more than this percentage of the pool's enabled
    /// backends would then be ejected.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Retries of requests that failed before any byte of a response arrived.
/// Only idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or
/// any carrying an `Idempotency-Key` header) are retried, and never more
/// than the budget allows, so retries cannot multiply an outage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first try (0: none).
    pub attempts: u32,
    /// Retries may add at most this percentage to the pool's requests…
    pub budget_percent: u32,
    /// …plus this many per second, so a quiet pool can still retry.
    pub min_per_second: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            budget_percent: 20,
            min_per_second: 3,
        }
    }
}

/// The last verdict of every node's active checks on every backend, by
/// pool, then backend, then node id (`true`: up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReports(BTreeMap<String, BTreeMap<SocketAddr, BTreeMap<u64, bool>>>);

impl HealthReports {
    /// What `node` last reported about `address` in `pool`.
    pub fn verdict(&self, pool: &str, address: SocketAddr, node: u64) -> Option<bool> {
        self.0.get(pool)?.get(&address)?.get(&node).copied()
    }

    /// Every node's verdict on `address` in `pool`.
    pub fn verdicts(&self, pool: &str, address: SocketAddr) -> Option<&BTreeMap<u64, bool>> {
        self.0.get(pool)?.get(&address)
    }

    pub(crate) fn record(&mut self, pool: &str, address: SocketAddr, node: u64, up: bool) {
        self.0
            .entry(pool.to_string())
            .or_default()
            .entry(address)
            .or_default()
            .insert(node, up);
    }

    /// Forgets backends for which `exists(pool, address)` is false.
    pub(crate) fn retain(&mut self, mut exists: impl FnMut(&str, SocketAddr) -> bool) {
        for (pool, backends) in self.0.iter_mut() {
            backends.retain(|address, _| exists(pool, *address));
        }
        self.0.retain(|_, backends| !backends.is_empty());
    }

    /// Forgets the backends of `pool` for which `exists(address)` is false.
    pub(crate) fn retain_pool(&mut self, pool: &str, mut exists: impl FnMut(SocketAddr) -> bool) {
        if let Some(backends) = self.0.get_mut(pool) {
            backends.retain(|address, _| exists(*address));
            if backends.is_empty() {
                self.0.remove(pool);
            }
        }
    }

    /// Forgets `address` in `pool`.
    pub(crate) fn forget(&mut self, pool: &str, address: SocketAddr) {
        if let Some(backends) = self.0.get_mut(pool) {
            backends.remove(&address);
            if backends.is_empty() {
                self.0.remove(pool);
            }
        }
    }
}
