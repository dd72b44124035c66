//! `raftlb-jepsen prove`: the proof that the harness catches planted bugs
//! (issue 8). Each failpoint runs under the nemesis that exposes it and
//! must make its checker report a violation; the same run (nemesis, seed)
//! without failpoints is the control and must be valid:
//!
//! - `vip-skip-lease-wait`, pause and partition: C3 (two hosts answer ARP
//!   for the VIP at once; a frozen or cut-off holder's lease outlives the
//!   wait of the successor that claims the VIP).
//! - `admin-ack-before-commit`, partition: C1 (a leader cut off from the
//!   others acknowledges writes that never commit; later reads miss them).
//!
//! This module owns the list of runs and the judgement; `main` runs them.

use crate::checker::Verdict;
use crate::nemesis::Fault;
use crate::report::Report;
use std::fmt::Write as _;

/// Seconds of workload and faults per run.
pub const TIME_LIMIT: u64 = 25;
/// The default seed (each planted bug was caught with it and others, see README).
pub const SEED: u64 = 7;

/// One run of the proof and what it must show.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: &'static str,
    pub faults: &'static [Fault],
    /// The planted bug, or `None` for a control run.
    pub failpoint: Option<&'static str>,
    /// The checker (by its name's prefix) that must catch it.
    pub caught_by: &'static str,
}

impl Run {
    pub fn failpoints(&self) -> Vec<String> {
        self.failpoint.iter().map(ToString::to_string).collect()
    }
}

const PLANTED: [(&str, &[Fault], &str, &str); 2] = [
    (
        "pause+partition",
        &[Fault::Pause, Fault::Partition],
        "vip-skip-lease-wait",
        "C3",
    ),
    ("partition", &[Fault::Partition], "admin-ack-before-commit", "C1"),
];

/// Each planted run, followed (with `control`) by its control run.
pub fn runs(control: bool) -> Vec<Run> {
    let mut runs = Vec::new();
    for (name, faults, failpoint, caught_by) in PLANTED {
        runs.push(Run {
            name,
            faults,
            failpoint: Some(failpoint),
            caught_by,
        });
        if control {
            runs.push(Run {
                name,
                faults,
                failpoint: None,
                caught_by,
            });
        }
    }
    runs
}

/// Whether each run showed what it must, as a table, and the exit code:
/// 0 all did; 1 a planted bug escaped its checker or a control run found
/// a violation; 2 otherwise (a control run ended unknown).
pub fn judge(runs: &[Run], reports: &[Report]) -> (String, u8) {
    let mut text = "== proof: planted bugs must be caught, control runs valid\n".to_string();
    let mut code = 0;
    for (run, report) in runs.iter().zip(reports) {
        let check = report.checks.iter().find(|c| c.name.starts_with(run.caught_by));
        let (shown, line) = match (run.failpoint, check) {
            (Some(point), Some(check)) => {
                let active = report
                    .checks
                    .iter()
                    .any(|c| c.name == "failpoints active" && c.verdict == Verdict::Valid);
                let caught = check.verdict == Verdict::Violation && active;
                if !caught {
                    code = 1;
                }
                let first = check.detail.lines().find(|l| !l.ends_with(": ok")).unwrap_or("");
                let word = if caught { "CAUGHT" } else { "MISSED" };
                (
                    caught,
                    format!("{point} under {}: {word} by {} ({first})", run.name, check.name),
                )
            }
            (None, _) => {
                let valid = report.verdict == Verdict::Valid;
                if report.verdict == Verdict::Violation {
                    code = 1;
                } else if !valid && code == 0 {
                    code = 2;
                }
                (
                    valid,
                    format!(
                        "control (no failpoints) under {}: {}",
                        run.name,
                        report.verdict.word()
                    ),
                )
            }
            (Some(point), None) => {
                code = 1;
                (false, format!("{point}: no check named {}…", run.caught_by))
            }
        };
        let _ = writeln!(text, "{} {line}", if shown { "ok  " } else { "FAIL" });
    }
    let _ = write!(text, "proof: {}", if code == 0 { "passed" } else { "FAILED" });
    (text, code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Check;

    fn report(verdict: Verdict, checks: Vec<Check>) -> Report {
        Report {
            name: "x".to_string(),
            verdict,
            text: String::new(),
            checks,
        }
    }

    fn check(name: &'static str, verdict: Verdict) -> Check {
        Check {
            name,
            verdict,
            detail: "key 0: ok\noverlap 1.2s over 3 claims".to_string(),
        }
    }

    #[test]
    fn a_proof_needs_every_bug_caught_by_its_checker_and_clean_controls() {
        let runs = runs(true);
        assert_eq!(runs.len(), 4);
        let active = check("failpoints active", Verdict::Valid);
        let caught = report(
            Verdict::Violation,
            vec![check("C3 one ARP answer", Verdict::Violation), active.clone()],
        );
        let clean = report(Verdict::Valid, vec![check("C3 one ARP answer", Verdict::Valid)]);
        let c1 = report(
            Verdict::Violation,
            vec![
                check("C1 linearizable registers", Verdict::Violation),
                active.clone(),
            ],
        );
        let clean1 = report(Verdict::Valid, vec![]);
        let (text, code) = judge(&runs, &[caught, clean, c1, clean1]);
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains("CAUGHT by C3 one ARP answer (overlap 1.2s"),
            "{text}"
        );

        // C3 caught, but by the wrong checker for the C1 bug: missed.
        let wrong = report(
            Verdict::Violation,
            vec![check("C3 one ARP answer", Verdict::Violation), active],
        );
        let c3 = report(
            Verdict::Violation,
            vec![
                check("C3 one ARP answer", Verdict::Violation),
                check("failpoints active", Verdict::Valid),
            ],
        );
        let (text, code) = judge(&runs[2..3], &[wrong]);
        assert_eq!(code, 1, "{text}");
        // A planted bug that did not run (no failpoints logged) proves nothing.
        let inactive = report(
            Verdict::Violation,
            vec![check("C3 one ARP answer", Verdict::Violation)],
        );
        assert_eq!(judge(&runs[..1], &[inactive]).1, 1);
        // A control run that is unknown: not proven, not a violation.
        let unknown = report(Verdict::Unknown, vec![]);
        assert_eq!(judge(&runs[..2], &[c3, unknown]).1, 2);
    }
}
