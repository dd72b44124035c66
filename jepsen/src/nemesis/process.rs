//! Process faults on one balancer, aimed as the schedule says (the leader
//! three times in four, else a random node, so leader, follower and random
//! targets all occur; the role is recorded in `detail`):
//!
//! - `kill`: SIGKILL, then at the heal a restart on the same data dir,
//!   waiting until the node says it is ready. The killed incarnation's log
//!   is kept as `<host>-killed<n>`.
//! - `pause`: SIGSTOP, held past the lease (every hold is at least a
//!   second, the election timeout at most 400 ms), then SIGCONT.
//!
//! Also here: [`restart`], which the drain's heal uses too.

use super::{About, Aim, save_log};
use crate::nemesis::Fault;
use raftlb_tests::process::stopped;
use raftlb_tests::site::{Site, signal};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum Plan {
    Kill { node: usize, role: &'static str },
    Pause { node: usize, role: &'static str },
}

pub fn plan(fault: Fault, aim: &Aim) -> Plan {
    let (node, role) = (aim.node, aim.role(aim.node));
    match fault {
        Fault::Pause => Plan::Pause { node, role },
        _ => Plan::Kill { node, role },
    }
}

impl Plan {
    pub fn about(&self) -> About {
        let (Plan::Kill { node, role } | Plan::Pause { node, role }) = self;
        About {
            node: Some(*node),
            key: None,
            detail: Some((*role).to_string()),
        }
    }
}

pub async fn start(site: &mut Site, plan: &Plan) -> Result<(), String> {
    match *plan {
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
    }
    Ok(())
}

/// Starts node `node` again on its data dir and waits until it is ready
/// (a node that never gets ready fails the run as a harness failure).
pub async fn restart(site: &mut Site, node: usize) {
    site.nodes[node] = site.spawn(node); // with the site's failpoints, if any
    site.nodes[node].ready(&[]).await;
}
