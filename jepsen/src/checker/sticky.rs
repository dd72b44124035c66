//! C4, sticky sessions (W3): a session answered by backend `a` and next by
//! backend `b ≠ a` moved; a move is allowed only if `a` may have been
//! unavailable in between: a fault on `a` (`backend-kill`,
//! `backend-partition` with key `a`), or a fault that can cut a balancer
//! from every backend (`netem`), overlapping the span from the last
//! answer by `a` to the first by `b`, its heal plus [`GRACE`] included
//! (passive health and ejections outlive the fault a little). Balancer
//! faults (kill, pause, partition, leader changes) never excuse a move:
//! the tables are replicated and the workload's listener is `sync`. The
//! harness removes no backend from the sticky pool, so no committed change
//! excuses one either.

use super::{Check, Fault, completed, faults};
use crate::history::{Kind, Op};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long after a fault's heal a move it caused may still show.
pub const GRACE: Duration = Duration::from_secs(5);
/// Faults that make every backend unreachable from some balancer.
const ANY_BACKEND: [&str; 1] = ["netem"];
/// At most this many moves are listed as evidence.
const EVIDENCE: usize = 5;

/// Whether `fault` may have made backend `backend` unavailable.
fn excuses(fault: &Fault, backend: u64) -> bool {
    let on_backend = fault.kind.starts_with("backend-") && fault.key.map(u64::from) == Some(backend);
    on_backend || ANY_BACKEND.contains(&fault.kind.as_str())
}

fn seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// C4 over `history`.
pub fn check(history: &[Op]) -> Check {
    let faults = faults(history);
    // Per session: (invoked, completed, backend) of every answered request.
    let mut sessions: BTreeMap<u32, Vec<(u64, u64, u64)>> = BTreeMap::new();
    let answered = completed(history, |o| o.f == "login" || o.f == "visit");
    for (invoke, done) in &answered {
        if done.kind == Kind::Ok
            && let (Some(session), Some(backend)) = (done.key, done.value)
        {
            sessions
                .entry(session)
                .or_default()
                .push((invoke.time_ns, done.time_ns, backend));
        }
    }
    let (mut moves, mut excused, mut unexcused) = (0usize, 0usize, Vec::new());
    for (session, visits) in &mut sessions {
        visits.sort_unstable();
        for pair in visits.windows(2) {
            let ((from_ns, _, a), (_, to_ns, b)) = (pair[0], pair[1]);
            if a == b {
                continue;
            }
            moves += 1;
            if faults
                .iter()
                .any(|f| excuses(f, a) && f.overlaps(from_ns, to_ns, GRACE))
            {
                excused += 1;
            } else {
                unexcused.push(format!(
                    "session j{session} moved from b{} to b{} between {} and {} with no fault on b{}",
                    a + 1,
                    b + 1,
                    seconds(from_ns),
                    seconds(to_ns),
                    a + 1
                ));
            }
        }
    }
    let figures = format!(
        "{} sessions, {} answered requests, {moves} moves ({excused} while their backend was faulted)",
        sessions.len(),
        sessions.values().map(Vec::len).sum::<usize>()
    );
    let more = unexcused.len().saturating_sub(EVIDENCE);
    unexcused.truncate(EVIDENCE);
    if more > 0 {
        unexcused.push(format!("… {more} more"));
    }
    Check::judged(
        "C4 sticky sessions stay",
        unexcused,
        figures,
        !sessions.is_empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;

    fn visit(history: &mut Vec<Op>, session: u32, at_ms: u64, backend: u64) {
        let ns = at_ms * 1_000_000;
        history.push(Op::new("st0", Kind::Invoke, "visit", ns).key(session));
        history.push(
            Op::new("st0", Kind::Ok, "visit", ns + 1_000_000)
                .key(session)
                .value(Some(backend)),
        );
    }

    fn fault(history: &mut Vec<Op>, kind: &str, key: u32, from_ms: u64, to_ms: u64) {
        history.push(Op::new("nemesis", Kind::Invoke, kind, from_ms * 1_000_000).key(key));
        history.push(Op::new("nemesis", Kind::Ok, &format!("heal-{kind}"), to_ms * 1_000_000).key(key));
    }

    #[test]
    fn a_session_that_stays_is_valid() {
        let mut history = Vec::new();
        for t in 0..5 {
            visit(&mut history, 1, t * 10, 2);
        }
        let check = check(&history);
        assert_eq!(check.verdict, Verdict::Valid, "{}", check.detail);
        assert!(check.detail.contains("0 moves"), "{}", check.detail);
    }

    #[test]
    fn a_move_without_a_fault_on_its_backend_is_a_violation() {
        let mut history = Vec::new();
        visit(&mut history, 7, 0, 0);
        fault(&mut history, "backend-kill", 1, 5, 10); // another backend
        visit(&mut history, 7, 20, 2);
        history.sort_by_key(|o| o.time_ns);
        let check = check(&history);
        assert_eq!(check.verdict, Verdict::Violation);
        assert!(
            check.detail.starts_with("session j7 moved from b1 to b3"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_move_while_its_backend_was_killed_is_excused_within_the_grace() {
        let mut history = Vec::new();
        visit(&mut history, 3, 0, 1);
        fault(&mut history, "backend-kill", 1, 100, 200);
        visit(&mut history, 3, 4_000, 0); // 3.8 s after the heal
        visit(&mut history, 4, 10_000, 1); // answered by b2 after the grace
        visit(&mut history, 4, 30_000, 0);
        history.sort_by_key(|o| o.time_ns);
        let check = check(&history);
        assert_eq!(check.verdict, Verdict::Violation);
        assert!(check.detail.contains("session j4 moved"), "{}", check.detail);
        assert!(!check.detail.contains("session j3"), "{}", check.detail);
        assert!(check.detail.contains("2 moves (1 while"), "{}", check.detail);
    }
}
