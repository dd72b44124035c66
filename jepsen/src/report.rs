//! The report of one scenario: what ran (seed, time limit, faults, Raft
//! timing), how many operations of each kind the history holds, the
//! nemesis timeline, requests/s through the VIP before, during and after
//! faults with the total unavailability, every check's verdict and
//! figures, and the verdict of the run (the worst check). Printed to
//! stdout and saved as `report.txt` beside the history.

use crate::checker::{self, Check, Verdict};
use crate::history::{Kind, Op};
use crate::scenario::Config;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug)]
pub struct Report {
    pub name: String,
    pub verdict: Verdict,
    pub text: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(config: &Config, timing: String, dir: PathBuf, ops: &[Op], checks: Vec<Check>) -> Report {
        let verdict = checks.iter().map(|c| c.verdict).max().unwrap_or(Verdict::Unknown);
        let faults: Vec<&str> = config.faults.iter().map(|f| f.name()).collect();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "== scenario {} (nemesis: {}; seed {}; {:?}; {} admin clients; {timing})",
            config.name,
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(",")
            },
            config.seed,
            config.time_limit,
            config.clients,
        );
        if !config.failpoints.is_empty() {
            let _ = writeln!(text, "failpoints: {} (planted bugs)", config.failpoints.join(","));
        }
        let _ = writeln!(text, "history: {}", summary(ops));
        text.push_str(&timeline(ops));
        let _ = writeln!(text, "{}", traffic(ops));
        for check in &checks {
            let mut lines = check.detail.lines();
            let _ = writeln!(
                text,
                "{:<38} {:<9} {}",
                check.name,
                check.verdict.word(),
                lines.next().unwrap_or("")
            );
            for line in lines {
                let _ = writeln!(text, "{:<48} {line}", "");
            }
        }
        let _ = writeln!(
            text,
            "verdict: {} (exit {}); results in {}",
            verdict.word(),
            verdict.exit_code(),
            dir.display()
        );
        let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("report.txt"), &text));
        Report {
            name: config.name.clone(),
            verdict,
            text,
            checks,
        }
    }
}

/// Completions per function and kind: `write 120 ok / 3 fail / 9 info, …`.
fn summary(ops: &[Op]) -> String {
    let mut counts: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for op in ops {
        let slot = match op.kind {
            Kind::Invoke => continue,
            Kind::Ok => 0,
            Kind::Fail => 1,
            Kind::Info => 2,
        };
        counts.entry(op.f.as_str()).or_default()[slot] += 1;
    }
    if counts.is_empty() {
        return "empty".to_string();
    }
    counts
        .iter()
        .map(|(f, [ok, fail, info])| format!("{f} {ok} ok / {fail} fail / {info} info"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// One line per fault: `  3.210s–5.400s kill lb2`.
fn timeline(ops: &[Op]) -> String {
    let mut text = String::new();
    for fault in checker::faults(ops) {
        let target = match (fault.node, fault.key) {
            (Some(node), Some(key)) => format!("lb{} b{}", node + 1, key + 1),
            (Some(node), None) => format!("lb{}", node + 1),
            (None, Some(key)) => format!("b{}", key + 1),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            text,
            "  {:>7.3}s–{:.3}s {} {target}",
            seconds(fault.start_ns),
            seconds(fault.stop_ns),
            fault.kind
        );
    }
    text
}

/// Answered requests/s through the VIP before the first fault, while a
/// fault was under way and otherwise after it; and the total time from a
/// failed request to the next answered one.
fn traffic(ops: &[Op]) -> String {
    let faults = checker::faults(ops);
    let requests = checker::completed(ops, |o| o.process == "vip");
    let (Some((begin, _)), Some((_, end))) = (requests.first(), requests.last()) else {
        return "VIP answers: no requests".to_string();
    };
    let (begin, end) = (begin.time_ns, end.time_ns);
    let first = faults.first().map_or(end, |f| f.start_ns).clamp(begin, end);
    let during: u64 = faults.iter().map(|f| f.stop_ns.saturating_sub(f.start_ns)).sum();
    // Time spent in each phase: before the first fault, under a fault, the rest.
    let spans = [first - begin, during, (end - first).saturating_sub(during)];
    let mut answered = [0u64; 3];
    let (mut outage_from, mut unavailable) = (None, 0u64);
    for (invoke, done) in &requests {
        let at = invoke.time_ns;
        let phase = if at < first {
            0
        } else if faults.iter().any(|f| (f.start_ns..=f.stop_ns).contains(&at)) {
            1
        } else {
            2
        };
        answered[phase] += u64::from(done.kind == Kind::Ok);
        match (done.kind == Kind::Ok, outage_from) {
            (false, None) => outage_from = Some(at),
            (true, Some(from)) => {
                unavailable += done.time_ns.saturating_sub(from);
                outage_from = None;
            }
            _ => {}
        }
    }
    if let Some(from) = outage_from {
        unavailable += end.saturating_sub(from);
    }
    let rate = |phase: usize| match spans[phase] {
        0 => "-".to_string(),
        span => format!("{:.0}/s", answered[phase] as f64 / seconds(span)),
    };
    format!(
        "VIP answers: {} before faults, {} during ({:.1}s of faults), {} between and after; unavailable {:.3}s in all",
        rate(0),
        rate(1),
        seconds(during),
        rate(2),
        seconds(unavailable)
    )
}
