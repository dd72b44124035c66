//! C2, the set (W2): after the heal, the final read must hold every
//! element whose add was acknowledged (none lost), and nothing that was
//! never added or whose add certainly failed (no phantom). An add that
//! ended `info` may be there or not.

use super::{Check, Verdict};
use crate::history::{Kind, Op};
use std::collections::BTreeSet;

/// At most this many elements are listed as evidence.
const EVIDENCE: usize = 10;

fn listed(elements: &BTreeSet<u64>) -> String {
    let shown: Vec<String> = elements.iter().take(EVIDENCE).map(u64::to_string).collect();
    let more = elements.len().saturating_sub(EVIDENCE);
    match more {
        0 => format!("[{}]", shown.join(", ")),
        _ => format!("[{}, … {more} more]", shown.join(", ")),
    }
}

/// C2 over `history`.
pub fn check(history: &[Op]) -> Check {
    let adds = |kind: Kind| -> BTreeSet<u64> {
        history
            .iter()
            .filter(|o| o.f == "add" && o.kind == kind)
            .filter_map(|o| o.value)
            .collect()
    };
    let (attempted, ok, failed, info) = (
        adds(Kind::Invoke),
        adds(Kind::Ok),
        adds(Kind::Fail),
        adds(Kind::Info),
    );
    let read = history
        .iter()
        .rev()
        .find(|o| o.process == "set-final" && o.kind == Kind::Ok)
        .and_then(|o| o.values.clone());
    let name = "C2 no lost or phantom set element";
    let Some(read) = read else {
        return Check {
            name,
            verdict: Verdict::Unknown,
            detail: format!("no final read of the set ({} adds attempted)", attempted.len()),
        };
    };
    let present: BTreeSet<u64> = read.into_iter().collect();
    let lost: BTreeSet<u64> = ok.difference(&present).copied().collect();
    let phantom: BTreeSet<u64> = present
        .iter()
        .filter(|e| !attempted.contains(e) || failed.contains(e))
        .copied()
        .collect();
    let figures = format!(
        "{} adds: {} ok, {} fail, {} info ({} of them present); final read {} elements",
        attempted.len(),
        ok.len(),
        failed.len(),
        info.len(),
        info.intersection(&present).count(),
        present.len()
    );
    let mut problems = Vec::new();
    if !lost.is_empty() {
        problems.push(format!("lost (acknowledged, not read): {}", listed(&lost)));
    }
    if !phantom.is_empty() {
        problems.push(format!(
            "phantom (read, never added or failed): {}",
            listed(&phantom)
        ));
    }
    Check::judged(name, problems, figures, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(history: &mut Vec<Op>, e: u64, end: Kind) {
        history.push(Op::new("s0", Kind::Invoke, "add", 0).value(Some(e)));
        history.push(Op::new("s0", end, "add", 1).value(Some(e)));
    }

    fn read(history: &mut Vec<Op>, elements: Vec<u64>) {
        history.push(Op::new("set-final", Kind::Ok, "read", 2).values(elements));
    }

    #[test]
    fn acknowledged_adds_present_and_info_either_way_is_valid() {
        let mut history = Vec::new();
        add(&mut history, 1, Kind::Ok);
        add(&mut history, 2, Kind::Info);
        add(&mut history, 3, Kind::Info);
        add(&mut history, 4, Kind::Fail);
        read(&mut history, vec![1, 3]);
        let check = check(&history);
        assert_eq!(check.verdict, Verdict::Valid, "{}", check.detail);
        assert!(
            check.detail.contains("2 info (1 of them present)"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_lost_acknowledged_add_is_a_violation() {
        let mut history = Vec::new();
        add(&mut history, 1, Kind::Ok);
        add(&mut history, 2, Kind::Ok);
        read(&mut history, vec![2]);
        let check = check(&history);
        assert_eq!(check.verdict, Verdict::Violation);
        assert!(
            check.detail.starts_with("lost (acknowledged, not read): [1]"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn an_element_never_added_or_failed_is_a_phantom() {
        let mut history = Vec::new();
        add(&mut history, 1, Kind::Fail);
        read(&mut history, vec![1, 9]);
        let check = check(&history);
        assert_eq!(check.verdict, Verdict::Violation);
        assert!(
            check
                .detail
                .contains("phantom (read, never added or failed): [1, 9]"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn without_a_final_read_the_verdict_is_unknown() {
        let mut history = Vec::new();
        add(&mut history, 1, Kind::Ok);
        assert_eq!(check(&history).verdict, Verdict::Unknown);
    }
}
