//! C1: linearizability of a read/write register, one key at a time (a
//! history of independent keys is linearizable iff each key's is). A
//! Wing–Gong search with Lowe's memoisation: depth-first over "which
//! operation takes effect next", where an operation may go next only if no
//! other pending one returned before it was invoked, remembering every
//! (set of linearized operations, register value) already explored.
//!
//! A write that ended `info` (a timeout) may or may not have taken effect:
//! it has an open end and need not be linearized at all. One whose value no
//! read returned is dropped before the search (taking effect or not, nobody
//! could tell), which keeps timeouts under a partition from blowing up the
//! search. Failed operations and reads without an answer are dropped.

use crate::history::{Kind, Op};
use std::collections::{HashMap, HashSet};

/// One completed (or open-ended) register operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegOp {
    pub process: String,
    pub write: bool,
    pub value: u64,
    pub call: u64,
    /// `None`: an `info` write, which may take effect at any time after `call`.
    pub ret: Option<u64>,
}

/// The outcome of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linear {
    Valid,
    /// No linearization exists; a sentence naming where the search got stuck.
    Violation(String),
    /// The search gave up after its budget of states.
    Unknown(String),
}

/// Key `key`'s register operations in `history`: each client's `invoke`
/// paired with its completion. `ok` reads and writes, `info` writes (and
/// writes never completed) with an open end; the rest are dropped.
pub fn register_ops(history: &[Op], key: u32) -> Vec<RegOp> {
    let mut open: HashMap<&str, &Op> = HashMap::new();
    let mut ops = Vec::new();
    let is_register = |op: &Op| op.key == Some(key) && (op.f == "write" || op.f == "read");
    for op in history.iter().filter(|op| is_register(op)) {
        if op.kind == Kind::Invoke {
            open.insert(&op.process, op);
            continue;
        }
        let Some(call) = open.remove(op.process.as_str()) else {
            continue;
        };
        let write = call.f == "write";
        match (write, op.kind, op.value.or(call.value)) {
            (true, Kind::Ok, Some(value)) => ops.push(reg(call, value, Some(op.time_ns))),
            (true, Kind::Info, Some(value)) => ops.push(reg(call, value, None)),
            (false, Kind::Ok, Some(value)) => ops.push(reg(call, value, Some(op.time_ns))),
            _ => {}
        }
    }
    // Writes still in flight at the end may have taken effect.
    for call in open.into_values().filter(|c| c.f == "write") {
        if let Some(value) = call.value {
            ops.push(reg(call, value, None));
        }
    }
    ops.sort_by_key(|o| o.call);
    ops
}

fn reg(call: &Op, value: u64, ret: Option<u64>) -> RegOp {
    RegOp {
        process: call.process.clone(),
        write: call.f == "write",
        value,
        call: call.time_ns,
        ret,
    }
}

/// `info` writes whose value some read returned: the only ones that matter.
fn prune(ops: &[RegOp]) -> (Vec<RegOp>, usize) {
    let read: HashSet<u64> = ops.iter().filter(|o| !o.write).map(|o| o.value).collect();
    let kept: Vec<RegOp> = ops
        .iter()
        .filter(|o| o.ret.is_some() || read.contains(&o.value))
        .cloned()
        .collect();
    let dropped = ops.len() - kept.len();
    (kept, dropped)
}

/// Statistics of one key's search, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Searched {
    pub ops: usize,
    pub unobserved_info: usize,
    pub states: usize,
}

/// Operations shown as the evidence of a violation.
const EVIDENCE: usize = 8;

/// Whether `ops` (any order) are a linearizable history of a register that
/// starts at `initial`, exploring at most `budget` states. A violation's
/// sentence ends with the last operations of the shortest failing prefix
/// (by invocation) a binary search finds: where the history first breaks.
pub fn check_register(initial: u64, ops: &[RegOp], budget: usize) -> (Linear, Searched) {
    let (mut ops, unobserved_info) = prune(ops);
    ops.sort_by_key(|o| o.call);
    let (linear, states) = search(initial, &ops, budget);
    let stats = Searched {
        ops: ops.len(),
        unobserved_info,
        states,
    };
    let Linear::Violation(why) = linear else {
        return (linear, stats);
    };
    // Invariant: ops[..hi] fails. Not every longer prefix of a failing one
    // fails (a later write can explain an earlier read), so this finds a
    // short failing prefix, not always the shortest; each step searches
    // with an eighth of the budget (one over it counts as not failing).
    let (mut lo, mut hi) = (0, ops.len());
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        match search(initial, &ops[..mid], budget / 8).0 {
            Linear::Violation(_) => hi = mid,
            _ => lo = mid,
        }
    }
    let shown: Vec<String> = ops[hi.saturating_sub(EVIDENCE)..hi]
        .iter()
        .map(|o| {
            let end = o
                .ret
                .map_or("info".to_string(), |r| format!("{:.3} s", r as f64 / 1e9));
            let what = if o.write { "write" } else { "read" };
            format!(
                "{} {what} {} [{:.3} s, {end}]",
                o.process,
                o.value,
                o.call as f64 / 1e9
            )
        })
        .collect();
    let why = format!(
        "{why}\nthe first {hi} operations already fail; the last of them: {}",
        shown.join("; ")
    );
    (Linear::Violation(why), stats)
}

/// The search over `ops`, sorted by invocation: its outcome and the states it explored.
fn search(initial: u64, ops: &[RegOp], budget: usize) -> (Linear, usize) {
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let must: usize = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut seen: HashSet<(Vec<u64>, u64)> = HashSet::new();
    // (linearized set, value, how many `ok` operations it holds)
    let mut stack: Vec<(Vec<u64>, u64, usize)> = vec![(vec![0; words], initial, 0)];
    let mut deepest: (usize, Vec<u64>, u64) = (0, vec![0; words], initial);
    while let Some((done, value, count)) = stack.pop() {
        if count == must {
            return (Linear::Valid, seen.len());
        }
        if count > deepest.0 {
            deepest = (count, done.clone(), value);
        }
        if seen.len() >= budget {
            return (
                Linear::Unknown(format!("gave up after {budget} states ({n} operations)")),
                seen.len(),
            );
        }
        let pending = |i: usize| done[i / 64] & (1 << (i % 64)) == 0;
        // An operation may go next if invoked before every pending return.
        let horizon = (0..n)
            .filter(|i| pending(*i))
            .filter_map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in (0..n).filter(|i| pending(*i)) {
            let op = &ops[i];
            if op.call > horizon {
                break; // sorted by call: none later can go either
            }
            let next = match op.write {
                true => op.value,
                false if op.value == value => value,
                false => continue,
            };
            let mut after = done.clone();
            after[i / 64] |= 1 << (i % 64);
            let key = (after, next);
            if seen.insert(key.clone()) {
                stack.push((key.0, key.1, count + usize::from(op.ret.is_some())));
            }
        }
    }
    let states = seen.len();
    let (count, done, value) = deepest;
    let stuck = (0..n)
        .filter(|i| done[i / 64] & (1 << (i % 64)) == 0)
        .filter(|i| ops[*i].ret.is_some())
        .min_by_key(|i| ops[*i].ret);
    let detail = match stuck {
        Some(i) => {
            let op = &ops[i];
            let what = if op.write { "write" } else { "read" };
            format!(
                "no linearization: at best {count} of {must} completed operations, the register then holding {value}; \
                 next due: {what} {} by {} over [{:.3} s, {:.3} s]",
                op.value,
                op.process,
                op.call as f64 / 1e9,
                op.ret.unwrap_or(0) as f64 / 1e9
            )
        }
        None => format!("no linearization (best: {count} of {must} operations)"),
    };
    (Linear::Violation(detail), states)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: usize = 100_000;

    fn w(value: u64, call: u64, ret: Option<u64>) -> RegOp {
        RegOp {
            process: format!("w{call}"),
            write: true,
            value,
            call,
            ret,
        }
    }

    fn r(value: u64, call: u64, ret: u64) -> RegOp {
        RegOp {
            write: false,
            ret: Some(ret),
            ..w(value, call, None)
        }
    }

    fn verdict(ops: &[RegOp]) -> Linear {
        check_register(1, ops, BUDGET).0
    }

    #[test]
    fn sequential_reads_of_the_last_write_are_valid() {
        let ops = [
            r(1, 0, 5),
            w(2, 10, Some(20)),
            r(2, 30, 40),
            w(3, 50, Some(60)),
            r(3, 70, 80),
        ];
        assert_eq!(verdict(&ops), Linear::Valid);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        let ops = [w(2, 0, Some(10)), w(3, 20, Some(30)), r(2, 40, 50)];
        let Linear::Violation(why) = verdict(&ops) else {
            panic!("accepted a stale read")
        };
        assert!(why.contains("read 2"), "{why}");
    }

    #[test]
    fn a_violation_names_the_prefix_where_the_history_breaks() {
        // Fine until the stale read at 40; later operations change nothing.
        let mut ops = vec![w(2, 0, Some(10)), w(3, 20, Some(30)), r(2, 40, 50)];
        ops.extend((0..20).map(|i| r(3, 100 + 10 * i, 105 + 10 * i)));
        let Linear::Violation(why) = verdict(&ops) else {
            panic!("accepted a stale read")
        };
        assert!(why.contains("the first 3 operations already fail"), "{why}");
        assert!(why.ends_with("w40 read 2 [0.000 s, 0.000 s]"), "{why}");
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        let ops = [w(5, 0, Some(10)), r(1, 20, 30)];
        assert!(matches!(verdict(&ops), Linear::Violation(_)));
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_a_violation() {
        assert!(matches!(verdict(&[r(9, 0, 10)]), Linear::Violation(_)));
    }

    #[test]
    fn reads_concurrent_with_a_write_may_see_either_but_not_go_back() {
        let ok = [w(2, 0, Some(100)), r(1, 10, 20), r(2, 30, 40), r(2, 50, 60)];
        assert_eq!(verdict(&ok), Linear::Valid);
        let back = [w(2, 0, Some(100)), r(2, 10, 20), r(1, 30, 40)];
        assert!(matches!(verdict(&back), Linear::Violation(_)));
    }

    #[test]
    fn an_info_write_may_take_effect_late_or_never() {
        let late = [w(3, 0, None), r(1, 5, 8), r(3, 50, 60), r(3, 70, 80)];
        assert_eq!(verdict(&late), Linear::Valid);
        let never = [w(3, 0, None), r(1, 50, 60)];
        assert_eq!(verdict(&never), Linear::Valid);
        // …but not before it was invoked, and not undone once seen.
        let early = [r(3, 0, 5), w(3, 10, None)];
        assert!(matches!(verdict(&early), Linear::Violation(_)));
        let undone = [w(3, 0, None), r(3, 10, 20), r(1, 30, 40)];
        assert!(matches!(verdict(&undone), Linear::Violation(_)));
    }

    #[test]
    fn unobserved_info_writes_are_dropped_before_the_search() {
        let ops: Vec<RegOp> = (0..200)
            .map(|i| w(100 + i, i, None))
            .chain([r(1, 500, 600)])
            .collect();
        let (linear, searched) = check_register(1, &ops, BUDGET);
        assert_eq!(linear, Linear::Valid);
        assert_eq!(searched.unobserved_info, 200);
    }

    #[test]
    fn many_concurrent_clients_stay_within_the_budget() {
        // Four clients, overlapping operations, 400 of them, all valid.
        let mut ops = Vec::new();
        let mut value = 1;
        for round in 0..100u64 {
            let t = round * 100;
            value += 1;
            ops.push(w(value, t, Some(t + 60)));
            ops.push(r(value - 1, t + 1, t + 30));
            ops.push(r(value, t + 61, t + 90));
            ops.push(r(value, t + 62, t + 95));
        }
        let (linear, searched) = check_register(1, &ops, BUDGET);
        assert_eq!(linear, Linear::Valid, "{searched:?}");
    }

    #[test]
    fn an_exhausted_budget_is_unknown() {
        let ops: Vec<RegOp> = (0..20)
            .map(|i| w(i + 2, 0, Some(1000)))
            .chain([r(99, 2000, 2001)])
            .collect();
        assert!(matches!(check_register(1, &ops, 50).0, Linear::Unknown(_)));
    }

    #[test]
    fn operations_are_paired_by_process_from_the_history() {
        let op = |p: &str, kind, f: &str, t, v: Option<u64>| Op::new(p, kind, f, t).key(0).value(v);
        let history = [
            op("w0", Kind::Invoke, "write", 0, Some(2)),
            op("w1", Kind::Invoke, "read", 1, None),
            op("w1", Kind::Ok, "read", 5, Some(1)),
            op("w0", Kind::Ok, "write", 6, Some(2)),
            op("w2", Kind::Invoke, "write", 7, Some(3)),
            op("w2", Kind::Info, "write", 9, Some(3)),
            op("w3", Kind::Invoke, "read", 10, None),
            op("w3", Kind::Fail, "read", 11, None),
            op("w4", Kind::Invoke, "write", 12, Some(4)),
            Op::new("w5", Kind::Invoke, "write", 13).key(1).value(Some(9)),
        ];
        let ops = register_ops(&history, 0);
        assert_eq!(
            ops,
            vec![
                w(2, 0, Some(6)).with("w0"),
                r(1, 1, 5).with("w1"),
                w(3, 7, None).with("w2"),
                w(4, 12, None).with("w4"),
            ]
        );
    }

    impl RegOp {
        fn with(mut self, process: &str) -> RegOp {
            self.process = process.to_string();
            self
        }
    }
}
