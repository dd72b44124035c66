//! The nemesis: faults injected one at a time on a schedule drawn from the
//! seed (a quiet spell, then a fault held for a while, then its heal), each
//! recorded in the history as `invoke`/`ok` of `kill`, `pause` or
//! `partition` and of `heal-…`. The target is the VIP owner (the Raft
//! leader) three times in four, else a random balancer.
//!
//! - `kill`: SIGKILL, then a restart on the same data dir.
//! - `pause`: SIGSTOP, held past the lease (at least a second), then SIGCONT.
//! - `partition`: the target drops every packet from and to the other
//!   balancers (an nftables table `inet jepsen` in its namespace), so Raft
//!   is cut both ways while the client host still reaches every node, VIP
//!   and admin API alike. `tests/tests/vip.rs` cuts the Raft port instead,
//!   which here would also cut the admin clients (they share port 7000).
//!
//! [`Nemesis::heal`] undoes whatever is active; the scenario always calls it.

use crate::history::{History, Kind, Op};
use crate::rng::Rng;
use raftlb_tests::netns;
use raftlb_tests::process::stopped;
use raftlb_tests::site::{BALANCERS, Site, signal};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Pause,
    Partition,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Kill, Fault::Pause, Fault::Partition];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
        }
    }

    pub fn parse(text: &str) -> Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == text)
            .ok_or_else(|| format!("unknown nemesis {text:?} (kill, pause, partition)"))
    }
}

#[derive(Debug)]
pub struct Nemesis {
    faults: Vec<Fault>,
    rng: Rng,
    history: History,
    active: Option<(Fault, usize)>,
    /// Logs of node incarnations that were killed: (name, text).
    pub logs: Vec<(String, String)>,
    kills: usize,
}

impl Nemesis {
    pub fn new(faults: Vec<Fault>, rng: Rng, history: History) -> Nemesis {
        Nemesis {
            faults,
            rng,
            history,
            active: None,
            logs: Vec::new(),
            kills: 0,
        }
    }

    fn record(&self, kind: Kind, f: &str, node: usize) {
        self.history
            .record(Op::new("nemesis", kind, f, self.history.now()).node(node));
    }

    /// Injects faults until `until`; each one is healed before the next
    /// and none is started that could not be held before `until`.
    pub async fn run(&mut self, site: &mut Site, until: Instant) {
        loop {
            let quiet = self.rng.millis(1_000, 3_000);
            let hold = self.rng.millis(1_000, 4_000);
            if self.faults.is_empty() || Instant::now() + quiet + hold > until {
                break;
            }
            // Every draw is made whatever the cluster does, so a seed
            // always gives the same schedule.
            let fault = self.faults[self.rng.below(self.faults.len() as u64) as usize];
            let random = self.rng.below(BALANCERS.len() as u64) as usize;
            let at_leader = self.rng.percent(75);
            tokio::time::sleep(quiet).await;
            let target = match site.holders().as_slice() {
                [leader] if at_leader => *leader,
                _ => random,
            };
            self.start(site, fault, target).await;
            tokio::time::sleep(hold).await;
            self.heal(site).await;
        }
        tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    }

    async fn start(&mut self, site: &mut Site, fault: Fault, node: usize) {
        self.record(Kind::Invoke, fault.name(), node);
        match fault {
            Fault::Kill => {
                site.nodes[node].kill();
                self.kills += 1;
                let name = format!("{}-killed{}", BALANCERS[node], self.kills);
                self.logs.push((name, site.nodes[node].log()));
            }
            Fault::Pause => {
                let pid = site.nodes[node].pid();
                signal(pid, "STOP");
                let start = Instant::now();
                while !stopped(pid) && start.elapsed() < Duration::from_secs(1) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Fault::Partition => partition(site, node, true),
        }
        self.active = Some((fault, node));
        self.record(Kind::Ok, fault.name(), node);
    }

    /// Undoes the active fault, if any: restarts a killed node (waiting
    /// until it serves), resumes a paused one, heals a partition.
    pub async fn heal(&mut self, site: &mut Site) {
        let Some((fault, node)) = self.active.take() else {
            return;
        };
        let f = format!("heal-{}", fault.name());
        self.record(Kind::Invoke, &f, node);
        match fault {
            Fault::Kill => {
                site.nodes[node] = site.spawn(node);
                site.nodes[node].ready(&[]).await;
            }
            Fault::Pause => signal(site.nodes[node].pid(), "CONT"),
            Fault::Partition => partition(site, node, false),
        }
        self.record(Kind::Ok, &f, node);
    }
}

/// Cuts balancer `node` off from the other balancers (both ways), or heals it.
fn partition(site: &Site, node: usize, cut: bool) {
    let others: Vec<String> = BALANCERS
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != node)
        .map(|(_, h)| site.lab.address(h).to_string())
        .collect();
    let set = others.join(", ");
    let rules = if cut {
        format!(
            "table inet jepsen {{\n\
               chain in {{ type filter hook input priority -200; ip saddr {{ {set} }} drop; }}\n\
               chain out {{ type filter hook output priority -200; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        )
    } else {
        "delete table inet jepsen\n".to_string()
    };
    netns::nft(&site.lab.ns(BALANCERS[node]), &rules);
}
