//! The DNS discovery section of `/metrics`: rounds of queries and failed
//! rounds (per pool and reason) of the discovery this node ran as leader.

use crate::control::discovery::DiscoveryCounts;

/// Writes the discovery counters.
pub(super) fn render(metric: &mut impl FnMut(&str, &str, &str, &[(String, f64)]), counts: &DiscoveryCounts) {
    let lookups: Vec<(String, f64)> = counts
        .lookups()
        .into_iter()
        .map(|(pool, n)| (format!("{{pool=\"{pool}\"}}"), n as f64))
        .collect();
    metric(
        "discovery_lookups_total",
        "counter",
        "Rounds of DNS queries for a pool's discovery, run by this node as leader.",
        &lookups,
    );
    let failures: Vec<(String, f64)> = counts
        .failures()
        .into_iter()
        .map(|(pool, reason, n)| (format!("{{pool=\"{pool}\",reason=\"{reason}\"}}"), n as f64))
        .collect();
    metric(
        "discovery_failures_total",
        "counter",
        "Rounds of DNS queries that gave no usable answer (timeout, servfail, empty, nxdomain, error); the last committed backend set was kept (NXDOMAIN empties it after nxdomain_hold).",
        &failures,
    );
}
