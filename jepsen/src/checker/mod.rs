//! The checkers: each judges the recorded history (or the node logs, or the
//! ARP replies) after the run and returns a [`Check`]. C1 linearizable
//! registers ([`linear`]), C2 no lost or phantom set element ([`set`]), C3
//! one VIP owner: one host answering ARP for it at a time, and every
//! request taken by the owner of the moment ([`owner`]), C4 no sticky session moved
//! without cause ([`sticky`]), C5 failover windows per fault kind (figures,
//! no verdict of its own), C6 every answered request served by a backend
//! and every failure inside a fault ([`delivery`]), C8 no panic in any node
//! log. C7 (the cluster after the heal) is measured live by the scenario
//! and judged here from what it saw.

pub mod delivery;
pub mod linear;
pub mod owner;
pub mod set;
pub mod sticky;

use crate::history::{Kind, Op};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a checker concluded; a run's verdict is the worst of its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Valid,
    Unknown,
    Violation,
}

impl Verdict {
    /// The process exit code: 0 valid, 1 violation, 2 unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Valid => 0,
            Verdict::Violation => 1,
            Verdict::Unknown => 2,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Unknown => "unknown",
            Verdict::Violation => "VIOLATION",
        }
    }
}

/// One checker's result.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

impl Check {
    /// A violation if there are `problems` (listed first, one a line, then
    /// the `figures`), else valid when the checker `observed` anything to
    /// judge and unknown when it did not.
    pub fn judged(name: &'static str, problems: Vec<String>, figures: String, observed: bool) -> Check {
        let verdict = match (problems.is_empty(), observed) {
            (false, _) => Verdict::Violation,
            (true, true) => Verdict::Valid,
            (true, false) => Verdict::Unknown,
        };
        let detail = match problems.is_empty() {
            true => figures,
            false => format!("{}\n{figures}", problems.join("\n")),
        };
        Check {
            name,
            verdict,
            detail,
        }
    }
}

/// C1: every register key's history is linearizable.
pub fn linearizable(history: &[Op], keys: u32, initial: u64, budget: usize) -> Check {
    let mut verdict = Verdict::Valid;
    let mut details = Vec::new();
    for key in 0..keys {
        let ops = linear::register_ops(history, key);
        let (result, searched) = linear::check_register(initial, &ops, budget);
        let (v, what) = match result {
            linear::Linear::Valid => (Verdict::Valid, "ok".to_string()),
            linear::Linear::Violation(why) => (Verdict::Violation, why),
            linear::Linear::Unknown(why) => (Verdict::Unknown, why),
        };
        verdict = verdict.max(v);
        details.push(format!(
            "key {key}: {} ops ({} unobserved info writes dropped), {} states: {what}",
            searched.ops, searched.unobserved_info, searched.states
        ));
    }
    Check {
        name: "C1 linearizable registers",
        verdict,
        detail: details.join("\n"),
    }
}

/// One fault the nemesis injected: its kind, its target (the backend of a
/// backend fault as `key`, the balancer as `node`) and when it started and
/// ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: String,
    pub key: Option<u32>,
    pub node: Option<usize>,
    pub start_ns: u64,
    pub stop_ns: u64,
}

impl Fault {
    /// Whether `[from_ns, to_ns]` meets the fault or the `grace` after its heal.
    pub fn overlaps(&self, from_ns: u64, to_ns: u64, grace: Duration) -> bool {
        let grace = u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX);
        from_ns <= self.stop_ns.saturating_add(grace) && to_ns >= self.start_ns
    }
}

/// The faults in a history: from the nemesis' `invoke` of `f` (the fault
/// is under way from then on) to the end (`ok` or `info`) of `heal-f`.
pub fn faults(history: &[Op]) -> Vec<Fault> {
    let mut open: Option<&Op> = None;
    let mut faults = Vec::new();
    for op in history.iter().filter(|o| o.process == "nemesis") {
        match (op.f.strip_prefix("heal-"), op.kind) {
            // A heal that ended `info` (a re-add or drain that timed out)
            // still ends the fault's window: the nemesis moved on.
            (Some(kind), Kind::Ok | Kind::Info) => {
                if let Some(started) = open.take()
                    && started.f == kind
                {
                    faults.push(Fault {
                        kind: started.f.clone(),
                        key: started.key,
                        node: started.node,
                        start_ns: started.time_ns,
                        stop_ns: op.time_ns,
                    });
                }
            }
            (None, Kind::Invoke) => open = Some(op),
            _ => {}
        }
    }
    faults
}

/// The completed operations of `processes` (those `wanted` accepts), as
/// (invocation, completion) pairs; each process has one operation in
/// flight at a time.
pub fn completed(history: &[Op], wanted: impl Fn(&Op) -> bool) -> Vec<(&Op, &Op)> {
    let mut open: BTreeMap<&str, &Op> = BTreeMap::new();
    let mut pairs = Vec::new();
    for op in history.iter().filter(|o| wanted(o)) {
        match op.kind {
            Kind::Invoke => {
                open.insert(op.process.as_str(), op);
            }
            _ => {
                if let Some(invoke) = open.remove(op.process.as_str()) {
                    pairs.push((invoke, op));
                }
            }
        }
    }
    pairs
}

/// Each fault's failover window: from its start to the end of the first
/// request through the VIP that succeeded after the first one that failed
/// (requests started after the fault's start and ended before the next
/// fault's: a heal can cause an outage of its own, a rejoining node forcing
/// an election);
/// `None` when no request failed, i.e. no outage.
pub fn failover_windows(history: &[Op], faults: &[Fault]) -> Vec<(String, Option<Duration>)> {
    // (start, end, ok) of every request through the VIP.
    let mut open: Option<u64> = None;
    let mut requests = Vec::new();
    for op in history.iter().filter(|o| o.process == "vip") {
        match op.kind {
            Kind::Invoke => open = Some(op.time_ns),
            kind => {
                if let Some(start) = open.take() {
                    requests.push((start, op.time_ns, kind == Kind::Ok));
                }
            }
        }
    }
    faults
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let until = faults.get(i + 1).map_or(u64::MAX, |f| f.start_ns);
            // Only requests that also ended before the next fault began: one
            // cut short by the next fault is that fault's.
            let during = requests
                .iter()
                .filter(|(s, e, _)| *s >= fault.start_ns && *e < until);
            let mut failed = false;
            let mut window = None;
            let mut last = fault.start_ns;
            for (_, end, ok) in during {
                last = last.max(*end);
                if !ok {
                    failed = true;
                } else if failed {
                    window = Some(Duration::from_nanos(end - fault.start_ns));
                    break;
                }
            }
            // A failure never followed by a success: as long as it was watched.
            if failed && window.is_none() {
                window = Some(Duration::from_nanos(last - fault.start_ns));
            }
            (fault.kind.clone(), window)
        })
        .collect()
}

/// p-th quantile of sorted durations (nearest rank).
pub fn quantile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(rank.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// C5: failover windows per fault kind, p50/p99/max (figures only).
pub fn failover(history: &[Op]) -> Check {
    let faults = faults(history);
    let mut by_kind: BTreeMap<String, (Vec<Duration>, usize)> = BTreeMap::new();
    for (kind, window) in failover_windows(history, &faults) {
        let entry = by_kind.entry(kind).or_default();
        match window {
            Some(w) => entry.0.push(w),
            None => entry.1 += 1,
        }
    }
    let detail = if by_kind.is_empty() {
        "no faults".to_string()
    } else {
        by_kind
            .into_iter()
            .map(|(kind, (mut windows, clean))| {
                windows.sort();
                let figures = match windows.last() {
                    Some(max) => format!(
                        "n={} p50={:?} p99={:?} max={max:?}",
                        windows.len(),
                        quantile(&windows, 0.5),
                        quantile(&windows, 0.99)
                    ),
                    None => "n=0".to_string(),
                };
                format!("{kind}: {figures}; {clean} without an outage")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Check {
        name: "C5 failover windows",
        verdict: Verdict::Valid,
        detail,
    }
}

/// C8: no node log says it panicked.
pub fn no_panics(logs: &[(String, String)]) -> Check {
    let panicked: Vec<String> = logs
        .iter()
        .filter_map(|(name, log)| {
            log.lines()
                .find(|l| l.contains("panicked"))
                .map(|l| format!("{name}: {}", l.trim()))
        })
        .collect();
    Check {
        name: "C8 no panics in node logs",
        verdict: if panicked.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Violation
        },
        detail: if panicked.is_empty() {
            format!("{} logs read", logs.len())
        } else {
            panicked.join("\n")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(history: &mut Vec<Op>, start_ms: u64, ok: bool) {
        history.push(Op::new("vip", Kind::Invoke, "get", start_ms * 1_000_000));
        let kind = if ok { Kind::Ok } else { Kind::Fail };
        history.push(Op::new("vip", kind, "get", (start_ms + 1) * 1_000_000));
    }

    #[test]
    fn a_window_runs_from_the_fault_to_the_first_success_after_a_failure() {
        let mut history = Vec::new();
        vip(&mut history, 0, true);
        history.push(Op::new("nemesis", Kind::Invoke, "kill", 10_000_000));
        history.push(Op::new("nemesis", Kind::Ok, "kill", 12_000_000));
        vip(&mut history, 10, true); // in flight: still answered
        vip(&mut history, 20, false);
        vip(&mut history, 30, false);
        vip(&mut history, 500, true);
        history.push(Op::new("nemesis", Kind::Ok, "heal-kill", 600_000_000));
        vip(&mut history, 699, false); // ends after the next fault began
        history.push(Op::new("nemesis", Kind::Invoke, "pause", 700_000_000));
        history.push(Op::new("nemesis", Kind::Ok, "pause", 701_000_000));
        vip(&mut history, 710, true);
        history.push(Op::new("nemesis", Kind::Ok, "heal-pause", 800_000_000));
        let faults = faults(&history);
        assert_eq!(faults.len(), 2);
        let windows = failover_windows(&history, &faults);
        assert_eq!(
            windows,
            vec![
                ("kill".to_string(), Some(Duration::from_millis(491))),
                ("pause".to_string(), None)
            ]
        );
        let check = failover(&history);
        assert!(check.detail.contains("kill: n=1 p50=491ms"), "{}", check.detail);
        assert!(
            check.detail.contains("pause: n=0; 1 without an outage"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_panic_in_any_log_is_a_violation() {
        let logs = vec![
            ("lb1".to_string(), "INFO ready\n".to_string()),
            (
                "lb2-1".to_string(),
                "thread 'main' panicked at src/x.rs:1\n".to_string(),
            ),
        ];
        let check = no_panics(&logs);
        assert_eq!(check.verdict, Verdict::Violation);
        assert!(check.detail.starts_with("lb2-1:"), "{}", check.detail);
        assert_eq!(no_panics(&logs[..1]).verdict, Verdict::Valid);
    }

    #[test]
    fn the_worst_check_decides_the_exit_code() {
        let worst = [Verdict::Valid, Verdict::Unknown, Verdict::Valid]
            .into_iter()
            .max();
        assert_eq!(worst.map(Verdict::exit_code), Some(2));
        assert_eq!(Verdict::Violation.max(Verdict::Unknown).exit_code(), 1);
    }
}
