//! Why two hosts answered for a VIP at once: each overlap the prober saw,
//! named by balancer and wall-clock time, beside what the balancers logged
//! about their VIPs and leadership around it (the killed processes' logs
//! included). Printed by a failing test, so an overlap can be explained
//! from one CI log.

use crate::arp::Overlap;
use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Log lines within this long before an overlap starts are shown.
const BEFORE: Duration = Duration::from_millis(300);
/// And within this long after it ends.
const AFTER: Duration = Duration::from_millis(50);

/// What a log line must mention to be shown.
const TOPICS: [&str; 7] = ["VIP", "lease", "leader", "elect", "vote", "renew", "STALL"];

/// One balancer: its name, its MAC on the link, and every log it wrote
/// (earlier processes first).
#[derive(Debug)]
pub struct Balancer<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
    pub logs: Vec<String>,
}

/// The report: per overlap, who and when, then the balancers' lines.
pub fn explain(overlaps: &[Overlap], balancers: &[Balancer<'_>]) -> String {
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    let day_seconds = |at: Instant| {
        let wall = wall_now - now.saturating_duration_since(at);
        let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        (since_epoch.as_secs() % 86_400) as f64 + f64::from(since_epoch.subsec_micros()) / 1e6
    };
    let name = |mac: [u8; 6]| {
        balancers
            .iter()
            .find(|b| b.mac == mac)
            .map_or_else(|| format!("{mac:02x?}"), |b| b.name.to_string())
    };
    let mut out = String::new();
    for o in overlaps {
        let (from, to) = (day_seconds(o.from), day_seconds(o.to));
        let _ = writeln!(
            out,
            "== {} and {} both answered from {} for {:?}",
            name(o.macs[0]),
            name(o.macs[1]),
            clock(from),
            o.to - o.from
        );
        let window = (from - BEFORE.as_secs_f64(), to + AFTER.as_secs_f64());
        for b in balancers {
            for line in b.logs.iter().flat_map(|log| log.lines()) {
                let Some(at) = line_time(line) else { continue };
                if at >= window.0 && at <= window.1 && TOPICS.iter().any(|t| line.contains(t)) {
                    let _ = writeln!(out, "  {}: {line}", b.name);
                }
            }
        }
    }
    out
}

/// `HH:MM:SS.mmm` of a second of the day.
fn clock(seconds: f64) -> String {
    let whole = seconds as u64;
    let millis = ((seconds - whole as f64) * 1000.0) as u64;
    format!(
        "{:02}:{:02}:{:02}.{millis:03} UTC",
        whole / 3600,
        whole / 60 % 60,
        whole % 60
    )
}

/// The second of the day a tracing line (`2026-12-07T04:55:01.123456Z …`)
/// was written at.
fn line_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let h: f64 = h.parse().ok()?;
    let m: f64 = m.parse().ok()?;
    let s: f64 = s.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tracing_timestamp() {
        let line = "2026-12-07T04:55:01.250000Z  INFO raftlb_node::vip: VIP claimed";
        assert_eq!(line_time(line), Some(4.0 * 3600.0 + 55.0 * 60.0 + 1.25));
        assert_eq!(line_time("no stamp here"), None);
        assert_eq!(clock(4.0 * 3600.0 + 55.0 * 60.0 + 1.25), "04:55:01.250 UTC");
    }
}
