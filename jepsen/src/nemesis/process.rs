//! Process faults on one balancer, aimed as the schedule says (the leader
//! three times in four, else a random node, so leader, follower and random
//! targets all occur; the role is recorded in `detail`):
//!
//! - `kill`: SIGKILL, then at the heal a restart on the same data dir,
//!   waiting until the node says it is ready. The killed incarnation's log
//!   is kept as `<host>-killed<n>`.
//! - `pause`: SIGSTOP, held past the lease (every hold is at least a
//!   second, the election timeout at most 400 ms), then SIGCONT.
//! - `upgrade`: the process replaced in place (`raftlb run --upgrade`: its
//!   sockets and data dir pass to the new process, which restarts Raft),
//!   by the binary of [`EARLIER`] and by this build's in turn, so the
//!   cluster runs mixed versions; the start waits until the new process
//!   is ready and the old one has exited. The heal has nothing to undo.
//!   The old incarnation's log is kept as `<host>-upgraded<n>`.
//!
//! Also here: [`restart`], which the drain's heal uses too.

use super::{About, Aim, save_log};
use crate::nemesis::Fault;
use raftlb_tests::pinned;
use raftlb_tests::process::stopped;
use raftlb_tests::site::{Site, signal};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The earlier commit whose binary alternates with this build's in
/// `upgrade`: one that reads this build's newest format (6) and data dirs
/// of it, so neither the cluster version nor a data dir, once upgraded,
/// shuts it out (an upgrade across versions is one way;
/// `tests/tests/upgrade_versions.rs` covers that): format 6's first
/// commit, the merge of DNS discovery and GSLB (3e1de97). Its handing-over
/// leader keeps the VIP to the end of its lease (e32ae85); with an earlier
/// one, the old half of the alternation reset a request now and then.
pub const EARLIER: &str = "3e1de971aefa74837eeab5046a8efaece150f969";

/// How long an in-place upgrade's new process may take to be ready, and
/// its old one to drain and exit.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(20);

/// Upgrades made so far: even ones go to [`EARLIER`], odd ones to this build.
static UPGRADES: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
pub enum Plan {
    Kill {
        node: usize,
        role: &'static str,
    },
    Pause {
        node: usize,
        role: &'static str,
    },
    Upgrade {
        node: usize,
        role: &'static str,
        earlier: bool,
    },
}

pub fn plan(fault: Fault, aim: &Aim) -> Plan {
    let (node, role) = (aim.node, aim.role(aim.node));
    match fault {
        Fault::Pause => Plan::Pause { node, role },
        Fault::Upgrade => Plan::Upgrade {
            node,
            role,
            earlier: UPGRADES.fetch_add(1, Ordering::Relaxed).is_multiple_of(2),
        },
        _ => Plan::Kill { node, role },
    }
}

impl Plan {
    pub fn about(&self) -> About {
        let (Plan::Kill { node, role } | Plan::Pause { node, role } | Plan::Upgrade { node, role, .. }) =
            self;
        let detail = match self {
            Plan::Upgrade { earlier: true, .. } => format!("{role}, to {}", &EARLIER[..7]),
            Plan::Upgrade { earlier: false, .. } => format!("{role}, to this build"),
            _ => (*role).to_string(),
        };
        About {
            node: Some(*node),
            key: None,
            detail: Some(detail),
        }
    }
}

/// The binary of [`EARLIER`], built once (see `raftlb_tests::pinned`).
fn earlier_binary() -> std::path::PathBuf {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| pinned::binary(EARLIER)).clone()
}

/// Builds what `faults` will run that is not built yet (the earlier
/// binary `upgrade` alternates with), before the clock starts.
pub fn prepare(faults: &[Fault]) {
    if faults.contains(&Fault::Upgrade) {
        earlier_binary();
    }
}

pub async fn start(site: &mut Site, plan: &Plan, logs: &mut Vec<(String, String)>) -> Result<(), String> {
    match *plan {
        Plan::Upgrade { node, earlier, .. } => {
            let bin = if earlier {
                earlier_binary()
            } else {
                site.node_binary()
            };
            let log = format!("raftlb-upgrade{}.log", logs.len() + 1);
            let old = site.upgrade_in_place(node, &bin, &log, UPGRADE_DEADLINE).await;
            logs.push((
                format!(
                    "{}-upgraded{}",
                    raftlb_tests::site::BALANCERS[node],
                    logs.len() + 1
                ),
                old,
            ));
        }
        Plan::Kill { node, .. } => site.nodes[node].kill(),
        Plan::Pause { node, .. } => {
            let pid = site.nodes[node].pid();
            signal(pid, "STOP");
            let start = Instant::now();
            while !stopped(pid) && start.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    Ok(())
}

pub async fn heal(site: &mut Site, plan: &Plan, logs: &mut Vec<(String, String)>) -> Result<(), String> {
    match *plan {
        Plan::Kill { node, .. } => {
            save_log(logs, site, node, "killed");
            restart(site, node).await;
        }
        Plan::Pause { node, .. } => signal(site.nodes[node].pid(), "CONT"),
        Plan::Upgrade { .. } => {}
    }
    Ok(())
}

/// Starts node `node` again on its data dir and waits until it is ready
/// (a node that never gets ready fails the run as a harness failure).
pub async fn restart(site: &mut Site, node: usize) {
    site.nodes[node] = site.spawn(node); // with the site's failpoints, if any
    site.nodes[node].ready(&[]).await;
}
