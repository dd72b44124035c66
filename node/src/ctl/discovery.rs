//! A pool's DNS discovery as `raftlb ctl pools` shows it: what it asks,
//! the last good answer's time, the current failure, and the log index at
//! which the set last changed (the same on every node).

use super::format::{clock_time, plural};
use raftlb_config::duration;

/// The line under a pool's header; times are the leader's, shown in UTC.
pub(super) fn line(
    d: &raftlb_config::discovery::DiscoverySpec,
    status: &raftlb_config::discovery::DiscoveryStatus,
    now: std::time::SystemTime,
) -> String {
    let at = |ms: u64| {
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let ago = now.duration_since(then).map_or(0, |d| d.as_millis() as u64);
        clock_time(now, ago)
    };
    let port = match d.port {
        0 => String::new(),
        port => format!(" port {port}"),
    };
    let good = match status.last_good_ms {
        0 => "no good answer yet".to_string(),
        ms => format!("last good answer {} UTC", at(ms)),
    };
    let failing = match status.failure {
        Some((failure, since)) => format!("; failing: {} since {} UTC", failure.name(), at(since)),
        None => String::new(),
    };
    format!(
        "  discovery: {} {}{port}, every {}; {good}{failing}; set changed {} {}, last at log index {}\n",
        d.record.name(),
        d.name,
        duration::format(d.interval),
        status.changes,
        plural(status.changes as usize, "time"),
        status.changed_at
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlb_config::discovery::{DiscoveryFailure, DiscoverySpec, DiscoveryStatus, RecordType};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_line_says_name_last_good_failure_and_index() {
        let now = UNIX_EPOCH + Duration::from_secs(86_400 + 12 * 3600 + 30);
        let spec = DiscoverySpec {
            name: "app.service.consul".into(),
            record: RecordType::A,
            port: 8080,
            interval: Duration::from_secs(5),
            ..DiscoverySpec::default()
        };
        let ms = |s: u64| (86_400 + 12 * 3600 + s) * 1000;
        let status = DiscoveryStatus {
            changes: 3,
            changed_at: 42,
            last_good_ms: ms(10),
            failure: Some((DiscoveryFailure::ServFail, ms(20))),
        };
        assert_eq!(
            line(&spec, &status, now),
            "  discovery: A app.service.consul port 8080, every 5s; last good answer 12:00:10 UTC; \
             failing: servfail since 12:00:20 UTC; set changed 3 times, last at log index 42\n"
        );
        let fresh = line(&spec, &DiscoveryStatus::default(), now);
        assert!(
            fresh.contains("no good answer yet; set changed 0 times"),
            "{fresh}"
        );
    }
}
