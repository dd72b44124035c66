//! The report of one scenario: what ran (seed, time limit, faults, Raft
//! timing), how many operations of each kind the history holds, every
//! check's verdict and figures, and the verdict of the run (the worst
//! check). Printed to stdout and saved as `report.txt` beside the history.

use crate::checker::{Check, Verdict};
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
        let _ = writeln!(text, "history: {}", summary(ops));
        for check in &checks {
            let mut lines = check.detail.lines();
            let _ = writeln!(
                text,
                "{:<32} {:<9} {}",
                check.name,
                check.verdict.word(),
                lines.next().unwrap_or("")
            );
            for line in lines {
                let _ = writeln!(text, "{:<42} {line}", "");
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
