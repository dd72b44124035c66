//! The nemesis: faults injected one at a time on a schedule drawn from the
//! seed (a quiet spell, then a fault held for a while, then its heal), each
//! recorded in the history as `invoke`/`ok` of the fault's name and of
//! `heal-<name>`, with the balancer in `node`, a backend's index in `key`
//! and what else was chosen (shape, parameters, the target's role) in
//! `detail`. A fault aims at the VIP owner (the Raft leader) three times in
//! four, else at a random balancer, unless its family says otherwise.
//!
//! This file owns the fault list, its names and parsing, the tools each
//! fault needs ([`preflight`]), and the schedule; each family owns its
//! faults' start and heal:
//!
//! - [`process`]: `kill` (SIGKILL, restart on the same data dir), `pause`
//!   (SIGSTOP held past the lease, SIGCONT) and `upgrade` (the process
//!   replaced in place, `raftlb run --upgrade`, by the binary of an
//!   earlier commit and by this one's in turn).
//! - [`network`]: `partition` (one balancer isolated), `partition-ring`
//!   (one pair cut, the leader at one end), `partition-oneway` (one
//!   balancer drops only what comes from, or only what goes to, the
//!   others), all on the peer traffic only; `netem` (loss, delay,
//!   duplication, reordering on the switch's side of one or every port;
//!   only the loss and duplication, through nftables, on a kernel without
//!   `sch_netem`).
//! - [`backend`]: `backend-kill` (a backend refuses connections) and
//!   `backend-partition` (one balancer cannot reach one backend).
//! - [`membership`]: `member-remove` (a follower removed, then added back),
//!   `transfer` (planned leader transfer to a follower), `drain` (`ctl node
//!   drain` on the leader, which hands over and exits; restarted at the heal).
//!
//! [`Nemesis::heal`] undoes whatever is active; the scenario always calls it.
//! On a harness panic nothing is healed by hand: nftables tables and netem
//! qdiscs die with the lab's namespaces, and the nodes with their fixtures.

mod backend;
mod membership;
mod network;
mod process;

use crate::history::{History, Kind, Op};
use crate::rng::Rng;
use raftlb_tests::site::{BALANCERS, Site};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Pause,
    Partition,
    PartitionRing,
    PartitionOneway,
    Netem,
    BackendKill,
    BackendPartition,
    MemberRemove,
    Transfer,
    Drain,
    Upgrade,
}

/// Names `--nemesis` takes besides the faults' own: each stands for several.
const ALIASES: [(&str, &[Fault]); 3] = [
    ("all", &Fault::ALL),
    ("backend", &[Fault::BackendKill, Fault::BackendPartition]),
    ("member", &[Fault::MemberRemove]),
];

impl Fault {
    pub const ALL: [Fault; 12] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::PartitionRing,
        Fault::PartitionOneway,
        Fault::Netem,
        Fault::BackendKill,
        Fault::BackendPartition,
        Fault::MemberRemove,
        Fault::Transfer,
        Fault::Drain,
        Fault::Upgrade,
    ];

    /// Its name on the command line and as `f` in the history.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::PartitionRing => "partition-ring",
            Fault::PartitionOneway => "partition-oneway",
            Fault::Netem => "netem",
            Fault::BackendKill => "backend-kill",
            Fault::BackendPartition => "backend-partition",
            Fault::MemberRemove => "member-remove",
            Fault::Transfer => "transfer",
            Fault::Drain => "drain",
            Fault::Upgrade => "upgrade",
        }
    }

    pub fn parse(text: &str) -> Result<Fault, String> {
        Fault::ALL.into_iter().find(|f| f.name() == text).ok_or_else(|| {
            let names: Vec<&str> = Fault::ALL
                .iter()
                .map(|f| f.name())
                .chain(ALIASES.iter().map(|(a, _)| *a))
                .collect();
            format!("unknown nemesis {text:?} ({})", names.join(", "))
        })
    }

    /// `--nemesis`'s list: fault names and aliases (`all`, `backend`,
    /// `member`), empty entries skipped, each fault once, in first-seen order.
    pub fn parse_list(names: &[String]) -> Result<Vec<Fault>, String> {
        let mut faults = Vec::new();
        for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let named = match ALIASES.iter().find(|(alias, _)| *alias == name) {
                Some((_, faults)) => faults.to_vec(),
                None => vec![Fault::parse(name)?],
            };
            for fault in named {
                if !faults.contains(&fault) {
                    faults.push(fault);
                }
            }
        }
        Ok(faults)
    }

    /// The programs it runs besides `ip`, each with an argument that makes
    /// it print its version, and the package that has it.
    fn tools(self) -> &'static [(&'static str, &'static str, &'static str)] {
        const NFT: (&str, &str, &str) = ("nft", "--version", "nftables");
        const TC: (&str, &str, &str) = ("tc", "-V", "iproute2");
        match self {
            Fault::Partition
            | Fault::PartitionRing
            | Fault::PartitionOneway
            | Fault::BackendKill
            | Fault::BackendPartition => &[NFT],
            // nft stands in for a kernel without sch_netem.
            Fault::Netem => &[TC, NFT],
            Fault::Kill
            | Fault::Pause
            | Fault::Upgrade
            | Fault::MemberRemove
            | Fault::Transfer
            | Fault::Drain => &[],
        }
    }
}

/// Builds what `faults` need that is not built yet (an earlier commit's
/// binary for `upgrade`), before any scenario's clock starts.
pub fn prepare(faults: &[Fault]) {
    process::prepare(faults);
}

/// Whether every program `faults` need runs here; the error says which
/// fault needs what and where it comes from.
pub fn preflight(faults: &[Fault]) -> Result<(), String> {
    for fault in faults {
        for (tool, version, package) in fault.tools() {
            let runs = Command::new(tool)
                .arg(version)
                .output()
                .is_ok_and(|o| o.status.success());
            if !runs {
                return Err(format!(
                    "nemesis {} needs `{tool}` ({package}), which does not run here \
                     (`{tool} {version}` failed or it is not on PATH); install {package} or drop {} from --nemesis",
                    fault.name(),
                    fault.name()
                ));
            }
        }
    }
    if faults.contains(&Fault::Netem) && !network::kernel_has_netem() {
        eprintln!(
            "raftlb-jepsen: warning: this kernel has no netem qdisc (sch_netem); the netem nemesis \
             applies its loss and duplication with nftables instead, without delay or reordering"
        );
    }
    Ok(())
}

/// Whom the next fault is aimed at, drawn before its quiet spell.
#[derive(Debug)]
pub struct Aim {
    /// The VIP owner three times in four (when there is exactly one), else
    /// a random balancer.
    pub node: usize,
    /// The VIP owner, if exactly one balancer holds the VIP.
    pub leader: Option<usize>,
    /// The fault's own draws (shape, parameters, backend): one fork of the
    /// schedule's stream per fault, so what a fault draws never shifts the
    /// schedule.
    pub rng: Rng,
}

#[cfg(test)]
impl Aim {
    /// An aim at `node` with `leader` as the VIP owner, drawing from `seed`.
    pub fn fixed(node: usize, leader: Option<usize>, seed: u64) -> Aim {
        Aim {
            node,
            leader,
            rng: Rng::new(seed),
        }
    }
}

impl Aim {
    /// `node`'s role, for the history: `leader`, `follower` or `unknown`.
    pub fn role(&self, node: usize) -> &'static str {
        match self.leader {
            Some(l) if l == node => "leader",
            Some(_) => "follower",
            None => "unknown",
        }
    }
}

/// What a start or heal is about: recorded on its invocation and completion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    pub node: Option<usize>,
    pub key: Option<u32>,
    pub detail: Option<String>,
}

/// An active fault, with what its heal needs.
#[derive(Debug)]
enum Plan {
    Process(process::Plan),
    Network(network::Plan),
    Backend(backend::Plan),
    Membership(membership::Plan),
}

impl Plan {
    fn about(&self) -> About {
        match self {
            Plan::Process(p) => p.about(),
            Plan::Network(p) => p.about(),
            Plan::Backend(p) => p.about(),
            Plan::Membership(p) => p.about(),
        }
    }
}

#[derive(Debug)]
pub struct Nemesis {
    faults: Vec<Fault>,
    rng: Rng,
    history: History,
    active: Option<(Fault, Plan)>,
    /// Logs of node incarnations that were killed or drained: (name, text).
    pub logs: Vec<(String, String)>,
}

impl Nemesis {
    pub fn new(faults: Vec<Fault>, rng: Rng, history: History) -> Nemesis {
        Nemesis {
            faults,
            rng,
            history,
            active: None,
            logs: Vec::new(),
        }
    }

    /// Records the nemesis' `kind` of `f`; an error makes it `info` (the
    /// fault or heal may or may not have taken effect) with the error.
    fn record(&self, kind: Kind, f: &str, about: &About, error: Option<&String>) {
        let kind = if error.is_some() { Kind::Info } else { kind };
        let mut op = Op::new("nemesis", kind, f, self.history.now());
        op.node = about.node;
        op.key = about.key;
        if let Some(detail) = &about.detail {
            op = op.detail(detail.clone());
        }
        if let Some(error) = error {
            op = op.error(error.clone());
        }
        self.history.record(op);
    }

    /// Injects faults until `until`; each one is healed before the next
    /// and none is started that could not be held before `until`.
    pub async fn run(&mut self, site: &mut Site, until: Instant) {
        for round in 0u64.. {
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
            let rng = self.rng.fork(round);
            tokio::time::sleep(quiet).await;
            let leader = match site.holders().as_slice() {
                [one] => Some(*one),
                _ => None,
            };
            let node = match leader {
                Some(l) if at_leader => l,
                _ => random,
            };
            self.start(site, fault, Aim { node, leader, rng }).await;
            tokio::time::sleep(hold).await;
            self.heal(site).await;
        }
        tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    }

    async fn start(&mut self, site: &mut Site, fault: Fault, mut aim: Aim) {
        let plan = match fault {
            Fault::Kill | Fault::Pause | Fault::Upgrade => Plan::Process(process::plan(fault, &aim)),
            Fault::Partition | Fault::PartitionRing | Fault::PartitionOneway | Fault::Netem => {
                Plan::Network(network::plan(fault, &mut aim))
            }
            Fault::BackendKill | Fault::BackendPartition => {
                Plan::Backend(backend::plan(fault, site, &mut aim))
            }
            Fault::MemberRemove | Fault::Transfer | Fault::Drain => {
                Plan::Membership(membership::plan(fault, &mut aim))
            }
        };
        let about = plan.about();
        self.record(Kind::Invoke, fault.name(), &about, None);
        let outcome = match &plan {
            Plan::Process(p) => process::start(site, p, &mut self.logs).await,
            Plan::Network(p) => network::start(site, p).await,
            Plan::Backend(p) => backend::start(site, p),
            Plan::Membership(p) => membership::start(site, p).await,
        };
        // A start whose outcome is unknown (a ctl call that failed) is
        // still healed: it may have taken effect.
        self.record(Kind::Ok, fault.name(), &plan.about(), outcome.as_ref().err());
        self.active = Some((fault, plan));
    }

    /// Undoes the active fault, if any: restarts a killed or drained node
    /// (waiting until it serves), resumes a paused one, heals a partition,
    /// removes netem, revives a backend, adds a removed member back.
    pub async fn heal(&mut self, site: &mut Site) {
        let Some((fault, plan)) = self.active.take() else {
            return;
        };
        let f = format!("heal-{}", fault.name());
        let about = plan.about();
        self.record(Kind::Invoke, &f, &about, None);
        let outcome = match &plan {
            Plan::Process(p) => process::heal(site, p, &mut self.logs).await,
            Plan::Network(p) => network::heal(site, p).await,
            Plan::Backend(p) => backend::heal(site, p),
            Plan::Membership(p) => membership::heal(site, p, &mut self.logs).await,
        };
        self.record(Kind::Ok, &f, &about, outcome.as_ref().err());
    }
}

/// Saves node `node`'s log as `<host>-<why><n>` (n counts saved logs) before
/// its process is replaced.
fn save_log(logs: &mut Vec<(String, String)>, site: &Site, node: usize, why: &str) {
    let name = format!("{}-{why}{}", BALANCERS[node], logs.len() + 1);
    logs.push((name, site.nodes[node].log()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        list.split(',').map(str::to_string).collect()
    }

    #[test]
    fn every_fault_parses_back_from_its_name_and_names_are_unique() {
        for fault in Fault::ALL {
            assert_eq!(Fault::parse(fault.name()), Ok(fault));
        }
        let mut seen: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), Fault::ALL.len());
        let error = Fault::parse("chaos").unwrap_err();
        assert!(
            error.contains("partition-ring") && error.contains("all"),
            "{error}"
        );
    }

    #[test]
    fn a_list_expands_aliases_once_each_in_order() {
        assert_eq!(Fault::parse_list(&names("")), Ok(vec![]));
        assert_eq!(Fault::parse_list(&names("all")), Ok(Fault::ALL.to_vec()));
        assert_eq!(
            Fault::parse_list(&names("netem, backend,kill,backend-kill")),
            Ok(vec![
                Fault::Netem,
                Fault::BackendKill,
                Fault::BackendPartition,
                Fault::Kill
            ])
        );
        assert_eq!(
            Fault::parse_list(&names("member,transfer,drain")),
            Ok(vec![Fault::MemberRemove, Fault::Transfer, Fault::Drain])
        );
        assert_eq!(
            Fault::parse_list(&names("kill,all")).map(|f| f.len()),
            Ok(Fault::ALL.len())
        );
        assert!(Fault::parse_list(&names("kill,nope")).is_err());
    }

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        assert_eq!(preflight(&[Fault::Kill, Fault::Drain]), Ok(()));
        // Every fault needs at most nft and tc; both are iproute2/nftables.
        for fault in Fault::ALL {
            assert!(fault.tools().iter().all(|(t, ..)| ["nft", "tc"].contains(t)));
        }
    }

    #[test]
    fn an_aim_names_the_role() {
        let aim = Aim {
            node: 1,
            leader: Some(1),
            rng: Rng::new(1),
        };
        assert_eq!((aim.role(1), aim.role(0)), ("leader", "follower"));
        let aim = Aim { leader: None, ..aim };
        assert_eq!(aim.role(1), "unknown");
    }
}
