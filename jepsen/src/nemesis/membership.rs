//! Operator actions through `raftlb ctl`, run on a balancer's host like an
//! operator's shell there, during traffic:
//!
//! - `member-remove`: `ctl member remove <id>` of a follower (drawn among
//!   the followers; a random node when no single VIP owner names the
//!   leader), held, then `ctl member add <id> <raft address>` at the heal,
//!   retried until it is accepted. The removed node keeps running on its
//!   data dir meanwhile (the members refuse its Raft traffic), and it is
//!   added back as it is: raftlb documents no wipe or restart for a
//!   rejoining node (`member add`: "joins as learner, catches up, becomes
//!   voter"), and its log is a prefix of the leader's, so it catches up.
//! - `transfer`: `ctl leader transfer --to <id>` on the leader, to a
//!   follower drawn from the seed; the heal has nothing to undo.
//! - `drain`: `ctl node drain <id>` of the leader: it hands leadership and
//!   the VIP over, stops accepting, finishes what is in flight and exits
//!   (the site's `drain_timeout` is 1 s). The heal waits for the exit (a
//!   node still running after [`DRAIN_EXIT`] is killed, and the heal says
//!   so) and restarts it on its data dir, as a rolling upgrade would; its
//!   drained incarnation's log is kept as `<host>-drained<n>`.
//!
//! A planned handover should fail no request through the VIP; C5 reports
//! each kind's windows. A ctl call that fails makes the start or heal `info`
//! with ctl's error (it may or may not have taken effect).

use super::process::restart;
use super::{About, Aim, save_log};
use crate::nemesis::Fault;
use raftlb_tests::process::binary;
use raftlb_tests::site::{self, BALANCERS, Site};
use std::time::{Duration, Instant};

/// How long the heal keeps asking to add a removed member back.
const READD_DEADLINE: Duration = Duration::from_secs(60);
/// How long a drained node may take to exit before it is killed.
const DRAIN_EXIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub enum Plan {
    /// Remove `node` (id `node + 1`), asking `via`.
    Member {
        node: usize,
        via: usize,
        role: &'static str,
    },
    /// Hand leadership from `from` (asked) to `to`.
    Transfer { from: usize, to: usize, known: bool },
    /// Drain `node`.
    Drain { node: usize, role: &'static str },
}

/// One of the nodes other than `not`, by a draw from the seed.
fn other_than(not: usize, draw: u64) -> usize {
    let k = (draw % (BALANCERS.len() as u64 - 1)) as usize;
    if k >= not { k + 1 } else { k }
}

pub fn plan(fault: Fault, aim: &mut Aim) -> Plan {
    let draw = aim.rng.next_u64();
    let leader = aim.leader;
    let head = leader.unwrap_or(aim.node);
    match fault {
        Fault::MemberRemove => {
            let node = other_than(head, draw);
            Plan::Member {
                node,
                via: head,
                role: aim.role(node),
            }
        }
        Fault::Transfer => Plan::Transfer {
            from: head,
            to: other_than(head, draw),
            known: leader.is_some(),
        },
        _ => Plan::Drain {
            node: head,
            role: aim.role(head),
        },
    }
}

impl Plan {
    pub fn about(&self) -> About {
        let (node, detail) = match self {
            Plan::Member { node, via, role } => (
                *node,
                format!(
                    "{} ({role}) removed through {}",
                    BALANCERS[*node], BALANCERS[*via]
                ),
            ),
            Plan::Transfer { from, to, known } => (
                *from,
                format!(
                    "{} ({}) hands over to {}",
                    BALANCERS[*from],
                    if *known { "leader" } else { "unknown" },
                    BALANCERS[*to]
                ),
            ),
            Plan::Drain { node, role } => (*node, format!("{} ({role}) drained", BALANCERS[*node])),
        };
        About {
            node: Some(node),
            key: None,
            detail: Some(detail),
        }
    }
}

/// `raftlb ctl ARGS` against node `on`, run on its host: stdout, or ctl's
/// error.
async fn ctl(site: &Site, on: usize, args: &[&str]) -> Result<String, String> {
    let node = format!("{}:7000", site.lab.address(BALANCERS[on]));
    let output = tokio::process::Command::new("ip")
        .args(["netns", "exec", &site.lab.ns(BALANCERS[on])])
        .arg(binary())
        .args(["ctl", "--node", &node])
        .args(raftlb_tests::pki::shared(site::CLUSTER).ctl_args("admin"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run raftlb ctl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "ctl {} on {}: {}",
            args.join(" "),
            BALANCERS[on],
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

pub async fn start(site: &mut Site, plan: &Plan) -> Result<(), String> {
    match *plan {
        Plan::Member { node, via, .. } => {
            let id = (node + 1).to_string();
            ctl(site, via, &["member", "remove", &id]).await.map(drop)
        }
        Plan::Transfer { from, to, .. } => {
            let to = (to + 1).to_string();
            ctl(site, from, &["leader", "transfer", "--to", &to])
                .await
                .map(drop)
        }
        Plan::Drain { node, .. } => {
            let id = (node + 1).to_string();
            ctl(site, node, &["node", "drain", &id]).await.map(drop)
        }
    }
}

pub async fn heal(site: &mut Site, plan: &Plan, logs: &mut Vec<(String, String)>) -> Result<(), String> {
    match *plan {
        Plan::Member { node, via, .. } => {
            let id = (node + 1).to_string();
            let address = format!("{}:7000", site.lab.address(BALANCERS[node]));
            let start = Instant::now();
            // Through any other node: ctl forwards to the leader, and the
            // one asked first may have lost it meanwhile.
            let mut asked = via;
            loop {
                match ctl(site, asked, &["--timeout", "30s", "member", "add", &id, &address]).await {
                    Ok(_) => return Ok(()),
                    Err(e) if start.elapsed() > READD_DEADLINE => {
                        return Err(format!("not added back within {READD_DEADLINE:?}: {e}"));
                    }
                    Err(_) => {
                        asked = other_than(node, asked as u64 + 1);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        Plan::Transfer { .. } => Ok(()),
        Plan::Drain { node, .. } => {
            let start = Instant::now();
            while site.nodes[node].try_exit().is_none() && start.elapsed() < DRAIN_EXIT {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let exited = site.nodes[node].try_exit().is_some();
            save_log(logs, site, node, "drained");
            site.nodes[node].kill();
            restart(site, node).await;
            if exited {
                Ok(())
            } else {
                Err(format!(
                    "{} was still running {DRAIN_EXIT:?} after the drain; killed, restarted",
                    BALANCERS[node]
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_removal_takes_a_follower_through_the_leader() {
        let mut removed = [0usize; 3];
        for seed in 0..100 {
            let Plan::Member { node, via, role } =
                plan(Fault::MemberRemove, &mut Aim::fixed(1, Some(1), seed))
            else {
                panic!("a member plan");
            };
            assert_eq!((via, role), (1, "follower"));
            removed[node] += 1;
        }
        assert_eq!(removed[1], 0, "never the leader");
        assert!(removed[0] > 20 && removed[2] > 20, "{removed:?}");
    }

    #[test]
    fn a_transfer_goes_from_the_leader_to_a_follower_and_a_drain_takes_the_leader() {
        for seed in 0..50 {
            let Plan::Transfer { from, to, known } = plan(Fault::Transfer, &mut Aim::fixed(0, Some(2), seed))
            else {
                panic!("a transfer");
            };
            assert_eq!((from, known), (2, true));
            assert_ne!(to, 2);
        }
        let Plan::Drain { node, role, .. } = plan(Fault::Drain, &mut Aim::fixed(0, Some(2), 3)) else {
            panic!("a drain");
        };
        assert_eq!((node, role), (2, "leader"));
        // No single VIP owner: the aimed node stands in.
        let Plan::Drain { node, role, .. } = plan(Fault::Drain, &mut Aim::fixed(0, None, 3)) else {
            panic!("a drain");
        };
        assert_eq!((node, role), (0, "unknown"));
    }

    #[test]
    fn other_than_never_picks_the_excluded_node() {
        for not in 0..3 {
            for draw in 0..10 {
                assert_ne!(other_than(not, draw), not);
            }
        }
    }
}
