//! Running the nodes with failpoints (bugs planted on purpose, see
//! `node/src/failpoint.rs`): which names exist, the binary built with the
//! `failpoints` feature, the environment that switches them on, and the
//! check that every node really ran with them.
//!
//! The binary: `$RAFTLB_FAILPOINTS_BIN` if set, else `cargo build -p
//! raftlb-node --bin raftlb --features failpoints` into this harness's own
//! target directory and profile, copied to `raftlb-failpoints` beside it;
//! `raftlb` is then built again without the feature (a re-link: both
//! builds stay cached), so the ordinary binary is never left with
//! failpoint code in it.

use crate::checker::{Check, Verdict};
use raftlb_tests::process;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The failpoints a node built with the feature knows.
pub const KNOWN: [&str; 2] = ["vip-skip-lease-wait", "admin-ack-before-commit"];
/// The variable the nodes read them from.
pub const ENV: &str = "RAFTLB_FAILPOINTS";
/// What a node logs at start when failpoints are active.
const ACTIVE_LINE: &str = "FAILPOINTS ACTIVE";

/// Checks `names` against [`KNOWN`], dropping blanks and repeats.
pub fn parse(names: &[String]) -> Result<Vec<String>, String> {
    let mut points: Vec<String> = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !KNOWN.contains(&name) {
            return Err(format!(
                "unknown failpoint {name:?} (known: {})",
                KNOWN.join(", ")
            ));
        }
        if !points.iter().any(|p| p == name) {
            points.push(name.to_string());
        }
    }
    Ok(points)
}

/// The nodes' environment for `points` (nothing for none).
pub fn env(points: &[String]) -> Vec<(String, String)> {
    if points.is_empty() {
        return Vec::new();
    }
    vec![(ENV.to_string(), points.join(","))]
}

/// The nodes' binary for `points`: `None` (the ordinary one) for none.
/// Panics if the build fails; `main` builds it before any scenario starts.
pub fn node_binary(points: &[String]) -> Option<PathBuf> {
    if points.is_empty() {
        return None;
    }
    Some(binary().unwrap_or_else(|e| panic!("{e}")))
}

/// The binary with failpoints compiled in, built once per run of the harness.
pub fn binary() -> Result<PathBuf, String> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(build).clone()
}

fn build() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("RAFTLB_FAILPOINTS_BIN") {
        return Ok(PathBuf::from(path));
    }
    let built = std::panic::catch_unwind(|| process::build_with_features("failpoints"))
        .map_err(|_| "cargo build -p raftlb-node --features failpoints failed".to_string())?;
    let copy = built.with_file_name("raftlb-failpoints");
    let partial = built.with_file_name("raftlb-failpoints.partial");
    std::fs::copy(&built, &partial)
        .and_then(|_| std::fs::rename(&partial, &copy))
        .map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), copy.display()))?;
    // Put the ordinary binary back where the other fixtures expect it.
    std::panic::catch_unwind(|| process::build_with_features(""))
        .map_err(|_| "cargo build -p raftlb-node failed".to_string())?;
    Ok(copy)
}

/// Whether every node log (`logs`: name and text) says that exactly
/// `points` were active; `None` when no failpoints were asked for.
pub fn check(points: &[String], logs: &[(String, String)]) -> Option<Check> {
    if points.is_empty() {
        return None;
    }
    let wanted = points.join(",");
    let missing: Vec<&str> = logs
        .iter()
        .filter(|(_, log)| {
            !log.lines()
                .any(|l| l.contains(ACTIVE_LINE) && l.contains(&format!("failpoints={wanted}")))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    Some(Check {
        name: "failpoints active",
        verdict: if missing.is_empty() && !logs.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Unknown
        },
        detail: if missing.is_empty() {
            format!("{wanted} on every node ({} logs)", logs.len())
        } else {
            format!(
                "{} did not log {ACTIVE_LINE} with {wanted}: the planted bugs may not have run",
                missing.join(", ")
            )
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_list_is_known_names_once_each() {
        assert_eq!(parse(&names(&[])), Ok(vec![]));
        assert_eq!(
            parse(&names(&[
                "admin-ack-before-commit",
                " ",
                "admin-ack-before-commit"
            ])),
            Ok(names(&["admin-ack-before-commit"]))
        );
        let error = parse(&names(&["vip-skip-lease-wait", "nope"])).unwrap_err();
        assert!(error.contains("\"nope\""), "{error}");
        assert_eq!(env(&[]), vec![]);
        assert_eq!(env(&names(&KNOWN)), vec![(ENV.to_string(), KNOWN.join(","))]);
    }

    #[test]
    fn every_node_must_have_logged_the_failpoints() {
        let line = "WARN raftlb_node::failpoint: FAILPOINTS ACTIVE: … failpoints=vip-skip-lease-wait";
        let logs = vec![
            ("lb1".to_string(), format!("INFO a\n{line}\n")),
            ("lb2".to_string(), "INFO ready\n".to_string()),
        ];
        let points = names(&["vip-skip-lease-wait"]);
        assert!(check(&[], &logs).is_none());
        let partial = check(&points, &logs).expect("a check");
        assert_eq!(partial.verdict, Verdict::Unknown);
        assert!(partial.detail.starts_with("lb2 did not"), "{}", partial.detail);
        let all = check(&points, &logs[..1]).expect("a check");
        assert_eq!(all.verdict, Verdict::Valid, "{}", all.detail);
    }
}
