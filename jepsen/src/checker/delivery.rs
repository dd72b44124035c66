//! C6, delivery (W4): every request through the VIP that a client saw
//! answered `200` was logged by a backend (its `X-Request-Id`), so no
//! answer was made up on the way; and every request of the patient client
//! (process `patient`, which retries a connection for 3 s as browsers do)
//! that failed overlaps a fault, its heal plus [`GRACE`] included (a healed
//! node rejoining can force one more election) — planned handovers
//! ([`PLANNED`]) excepted: they must drop nothing. The impatient client
//! (`vip`, 25 ms to connect) measures outages for C5; its failures are
//! counted here, not judged: a connection a loaded 2-core machine
//! schedules 25 ms late is no fault of the cluster.

use super::{Check, completed, faults};
use crate::history::{Kind, Op};
use std::collections::HashSet;
use std::time::Duration;

/// How long after a fault's heal its failures may still show.
pub const GRACE: Duration = Duration::from_secs(5);
/// Fault kinds that are operations a user plans, not failures.
pub const PLANNED: [&str; 3] = ["transfer", "drain", "upgrade"];
/// At most this many requests are listed as evidence.
const EVIDENCE: usize = 5;

/// C6 over `history`, given the request ids the backends logged.
pub fn check(history: &[Op], served: &HashSet<u64>) -> Check {
    let faults = faults(history);
    let requests = completed(history, |o| o.process == "vip" || o.process == "patient");
    let (mut answered, mut failed, mut patient_failed) = (0usize, 0usize, 0usize);
    let (mut unlogged, mut unexcused) = (Vec::new(), Vec::new());
    for (invoke, done) in &requests {
        let id = done.value.unwrap_or(u64::MAX);
        if done.kind == Kind::Ok {
            answered += 1;
            if !served.contains(&id) {
                unlogged.push(id);
            }
        } else {
            failed += 1;
            if done.process != "patient" {
                continue;
            }
            patient_failed += 1;
            if !faults
                .iter()
                .filter(|f| !PLANNED.contains(&f.kind.as_str()))
                .any(|f| f.overlaps(invoke.time_ns, done.time_ns, GRACE))
            {
                unexcused.push((id, invoke.time_ns, done.error.clone()));
            }
        }
    }
    let figures = format!(
        "{answered} answered (all logged by a backend: {}), {failed} failed, {patient_failed} of them patient ({} outside any unplanned fault)",
        unlogged.is_empty(),
        unexcused.len()
    );
    let mut problems = Vec::new();
    if !unlogged.is_empty() {
        let shown: Vec<String> = unlogged.iter().take(EVIDENCE).map(u64::to_string).collect();
        problems.push(format!(
            "{} answered requests no backend logged, e.g. ids {}",
            unlogged.len(),
            shown.join(", ")
        ));
    }
    if !unexcused.is_empty() {
        let shown: Vec<String> = unexcused
            .iter()
            .take(EVIDENCE)
            .map(|(id, at, error)| match error {
                Some(error) => format!("{id} at {:.3}s ({error})", *at as f64 / 1e9),
                None => format!("{id} at {:.3}s", *at as f64 / 1e9),
            })
            .collect();
        problems.push(format!(
            "{} patient requests failed outside any unplanned fault, e.g. {}",
            unexcused.len(),
            shown.join(", ")
        ));
    }
    Check::judged(
        "C6 answers served, failures in faults",
        problems,
        figures,
        !requests.is_empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;

    fn get(history: &mut Vec<Op>, process: &str, id: u64, at_ms: u64, ok: bool) {
        let ns = at_ms * 1_000_000;
        history.push(Op::new(process, Kind::Invoke, "get", ns).value(Some(id)));
        let end = if ok { Kind::Ok } else { Kind::Fail };
        let done = Op::new(process, end, "get", ns + 1_000_000).value(Some(id));
        history.push(if ok { done } else { done.error("reset") });
    }

    fn fault(history: &mut Vec<Op>, kind: &str, from_ms: u64, to_ms: u64) {
        history.push(Op::new("nemesis", Kind::Invoke, kind, from_ms * 1_000_000));
        let heal = format!("heal-{kind}");
        history.push(Op::new("nemesis", Kind::Ok, &heal, to_ms * 1_000_000));
    }

    #[test]
    fn failures_inside_a_fault_and_logged_answers_are_valid() {
        let mut history = Vec::new();
        get(&mut history, "patient", 0, 0, true);
        fault(&mut history, "kill", 10, 100);
        get(&mut history, "patient", 1, 20, false);
        get(&mut history, "patient", 2, 3_000, false); // within the grace after the heal
        history.sort_by_key(|o| o.time_ns);
        let check = check(&history, &HashSet::from([0]));
        assert_eq!(check.verdict, Verdict::Valid, "{}", check.detail);
    }

    #[test]
    fn an_answer_no_backend_logged_is_a_violation() {
        let mut history = Vec::new();
        get(&mut history, "vip", 0, 0, true);
        get(&mut history, "patient", 1, 10, true);
        let check = check(&history, &HashSet::from([0]));
        assert_eq!(check.verdict, Verdict::Violation);
        assert!(check.detail.contains("e.g. ids 1"), "{}", check.detail);
    }

    #[test]
    fn a_patient_failure_outside_faults_or_in_a_planned_transfer_is_a_violation() {
        let mut history = Vec::new();
        fault(&mut history, "transfer", 0, 100);
        get(&mut history, "vip", 0, 50, false); // impatient: counted, not judged
        get(&mut history, "patient", 7, 60, false);
        get(&mut history, "vip", 1, 20_000, false);
        get(&mut history, "patient", 8, 20_000, false);
        history.sort_by_key(|o| o.time_ns);
        let check = check(&history, &HashSet::new());
        assert_eq!(check.verdict, Verdict::Violation);
        let expected = "2 patient requests failed outside any unplanned fault, e.g. 7 at 0.060s (reset), 8 at 20.000s (reset)";
        assert!(check.detail.contains(expected), "{}", check.detail);
        assert!(
            check.detail.contains("4 failed, 2 of them patient"),
            "{}",
            check.detail
        );
    }
}
