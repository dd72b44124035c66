//! The VIP section of `/metrics`: every VIP configured on this node, 1
//! while held and 0 otherwise (so "held by nobody" is a query), and how
//! many lease renewals went through or were missed.

use crate::control::gauges::VipCounts;
use std::sync::atomic::Ordering;

/// Writes the VIP metrics: `held` are the VIPs this node holds now.
pub(super) fn render(
    metric: &mut impl FnMut(&str, &str, &str, &[(String, f64)]),
    counts: &VipCounts,
    held: &[String],
) {
    let vips: Vec<(String, f64)> = counts
        .configured()
        .into_iter()
        .map(|vip| {
            let value = f64::from(u8::from(held.contains(&vip)));
            (format!("{{vip=\"{vip}\"}}"), value)
        })
        .collect();
    metric(
        "vip_held",
        "gauge",
        "1 while this node holds the VIP, 0 while it does not (every VIP configured here).",
        &vips,
    );
    metric(
        "vip_lease_renewals_total",
        "counter",
        "VIP lease renewals (kernel fence refreshed in time), one per VIP.",
        &[(String::new(), counts.renewals.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "vip_lease_misses_total",
        "counter",
        "VIP leases that ended unrenewed, one per VIP: no quorum confirmed it, it ran out, or the fence renewal failed or stalled.",
        &[(String::new(), counts.misses.load(Ordering::Relaxed) as f64)],
    );
}
