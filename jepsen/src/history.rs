//! The history of a run: every operation a client or the nemesis performed,
//! recorded as an invocation and its completion (`ok`, `fail`, `info`) on
//! one monotonic clock counted from the start of the run, and written as
//! JSONL, one operation a line. Checkers read nothing else.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a line of the history says about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The client is about to perform it.
    Invoke,
    /// It took effect (a write) or returned this value (a read).
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown: it may or may not have taken effect (a timeout).
    Info,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Who performed it: `w3` (a register client; a new number after an
    /// `info`, as a crashed Jepsen process), `s1` (a set client, the same),
    /// `set-final` (the set's read after the heal), `st0` (a sticky
    /// client), `vip` and `patient` (the traffic clients), `nemesis`,
    /// `final0`, `final1` … and `final-read` (the register write and read
    /// after the heal).
    pub process: String,
    pub kind: Kind,
    /// `write`, `read` (registers), `add`, `read` (the set), `login`,
    /// `visit` (sticky sessions: key the session, value the backend that
    /// answered), `get` / `tcp` (a request through the VIP's `http` /
    /// `tcp` listener, value its `X-Request-Id`), or a fault (`kill`,
    /// `partition-ring`, `backend-kill`, `heal-kill` …: the nemesis'
    /// names; backend faults carry the backend as key).
    pub f: String,
    /// A register's key; for a nemesis operation on a backend, the
    /// backend's index (backend k listens on port 80 + k).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// A read of a whole set (W2's final read): its elements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u64>>,
    /// Nanoseconds since the run's origin.
    pub time_ns: u64,
    /// The balancer (0-based) the operation was sent to or done to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What a nemesis operation did beyond `node` and `key`: a partition's
    /// shape, netem's parameters, a transfer's target, a target's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Op {
    pub fn new(process: impl Into<String>, kind: Kind, f: &str, time_ns: u64) -> Op {
        Op {
            process: process.into(),
            kind,
            f: f.to_string(),
            key: None,
            value: None,
            values: None,
            time_ns,
            node: None,
            error: None,
            detail: None,
        }
    }

    pub fn key(mut self, key: u32) -> Op {
        self.key = Some(key);
        self
    }

    pub fn value(mut self, value: Option<u64>) -> Op {
        self.value = value;
        self
    }

    pub fn values(mut self, values: Vec<u64>) -> Op {
        self.values = Some(values);
        self
    }

    pub fn node(mut self, node: usize) -> Op {
        self.node = Some(node);
        self
    }

    pub fn error(mut self, error: impl Into<String>) -> Op {
        self.error = Some(error.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Op {
        self.detail = Some(detail.into());
        self
    }
}

/// A history being recorded; clones share it.
#[derive(Debug, Clone)]
pub struct History {
    origin: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new() -> History {
        History {
            origin: Instant::now(),
            ops: Arc::default(),
        }
    }

    /// `at` as nanoseconds since the origin (0 if before it).
    pub fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Now, as nanoseconds since the origin.
    pub fn now(&self) -> u64 {
        self.ns(Instant::now())
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Every operation so far, ordered by time (stable: an invocation
    /// recorded before its completion at the same instant stays first).
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ops.sort_by_key(|op| op.time_ns);
        ops
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

/// Writes `ops` to `path` as JSONL.
pub fn write_jsonl(ops: &[Op], path: &Path) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a JSONL history back.
pub fn read_jsonl(path: &Path) -> std::io::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_survives_jsonl() {
        let ops = vec![
            Op::new("w0", Kind::Invoke, "write", 5)
                .key(1)
                .value(Some(7))
                .node(2),
            Op::new("w0", Kind::Info, "write", 9)
                .key(1)
                .value(Some(7))
                .error("timeout"),
            Op::new("nemesis", Kind::Ok, "kill", 10),
            Op::new("nemesis", Kind::Invoke, "partition-ring", 11)
                .node(0)
                .detail("lb1 <-> lb3 cut"),
        ];
        let path = std::env::temp_dir().join(format!("jepsen-history-{}.jsonl", std::process::id()));
        write_jsonl(&ops, &path).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.contains("\"kind\":\"invoke\"")),
            "{text}"
        );
        assert_eq!(read_jsonl(&path).expect("parse"), ops);
        let _ = std::fs::remove_file(path);
    }
}
