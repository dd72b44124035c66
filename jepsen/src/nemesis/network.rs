//! Network faults. Partitions cut only the peer traffic (packets between
//! balancers, matched by address in an nftables table `inet jepsen` in one
//! balancer's namespace), so the client host still reaches every node, VIP
//! and admin API alike; `tests/tests/vip.rs` cuts the Raft port instead,
//! which here would also cut the admin clients (they share port 7000).
//! With three balancers, "random halves" is one balancer cut off from the
//! other two: `partition` aimed at a random node.
//!
//! - `partition`: the target drops every packet from and to the others.
//! - `partition-ring`: one pair cannot talk (both ways, cut at one end),
//!   the third node still talks to both: every node sees a majority, the
//!   two ends disagree about who leads. The leader is one end when known.
//! - `partition-oneway`: the target drops only packets from the others
//!   (`in`) or only packets to them (`out`), drawn from the seed.
//! - `netem`: a `tc netem` qdisc (loss ≤ 20 %, delay ≤ 50 ms with normal
//!   jitter, duplication, reordering, drawn from the seed) on the switch's
//!   side of the target's port, or of every balancer's port one time in
//!   four: it shapes what the switch sends to the balancer (client and
//!   peer traffic alike). A kernel without `sch_netem` (some VMs' kernels
//!   have no modules: `tc` answers "Specified qdisc kind is unknown") gets
//!   what nftables can do instead, on the same ports' egress hook: the
//!   loss and the duplication, no delay, no reordering; the op's `detail`
//!   says which was applied and [`super::preflight`] warns.
//!
//! Heals delete the table or the qdiscs. A failing `nft` or `tc` is a
//! harness failure (a panic), not a fault that silently did nothing.

use super::{About, Aim};
use crate::nemesis::Fault;
use crate::rng::Rng;
use raftlb_tests::netns;
use raftlb_tests::site::{BALANCERS, Site};
use std::net::Ipv4Addr;

/// Which way a one-way partition drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets from the other balancers.
    In,
    /// Packets to the other balancers.
    Out,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Cut off from every other balancer, both ways.
    Isolate,
    /// Cut off from `other` only, both ways.
    Ring { other: usize },
    /// Cut off from every other balancer one way.
    OneWay(Direction),
}

/// netem's parameters, in whole percents and milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetemParams {
    pub loss_pct: u64,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub duplicate_pct: u64,
    pub reorder_pct: u64,
}

pub const MAX_LOSS_PCT: u64 = 20;
pub const MAX_DELAY_MS: u64 = 50;
pub const MAX_DUPLICATE_PCT: u64 = 5;
pub const MAX_REORDER_PCT: u64 = 25;

impl NetemParams {
    /// Draws every parameter: loss 0–20 %, delay 1–50 ms, jitter up to a
    /// fifth of the delay, duplication 0–5 %, reordering 0–25 %.
    pub fn draw(rng: &mut Rng) -> NetemParams {
        let loss_pct = rng.below(MAX_LOSS_PCT + 1);
        let delay_ms = 1 + rng.below(MAX_DELAY_MS);
        let jitter_ms = rng.below(delay_ms / 5 + 1);
        let duplicate_pct = rng.below(MAX_DUPLICATE_PCT + 1);
        let reorder_pct = rng.below(MAX_REORDER_PCT + 1);
        NetemParams {
            loss_pct,
            delay_ms,
            jitter_ms,
            duplicate_pct,
            reorder_pct,
        }
    }

    /// netem's arguments after `netem`: zero-valued parts left out (a
    /// distribution needs jitter; reordering needs the delay, always there).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.loss_pct > 0 {
            args.extend(["loss".to_string(), format!("{}%", self.loss_pct)]);
        }
        args.extend(["delay".to_string(), format!("{}ms", self.delay_ms)]);
        if self.jitter_ms > 0 {
            args.extend([
                format!("{}ms", self.jitter_ms),
                "distribution".to_string(),
                "normal".to_string(),
            ]);
        }
        if self.duplicate_pct > 0 {
            args.extend(["duplicate".to_string(), format!("{}%", self.duplicate_pct)]);
        }
        if self.reorder_pct > 0 {
            args.extend(["reorder".to_string(), format!("{}%", self.reorder_pct)]);
        }
        args
    }
}

#[derive(Debug)]
pub enum Plan {
    Partition {
        node: usize,
        shape: Shape,
        role: &'static str,
    },
    Netem {
        /// The balancers whose switch port gets the qdisc.
        nodes: Vec<usize>,
        params: NetemParams,
        /// No `sch_netem` here: loss and duplication through nftables.
        nft: bool,
    },
}

/// Whether this kernel has the netem qdisc (asked once, in a scratch
/// namespace: `tc qdisc add dev lo root netem delay 1ms`).
pub fn kernel_has_netem() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let ns = format!("rlb{}-netem-probe", std::process::id());
        let run = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let _ = run("ip", &["netns", "del", &ns]);
        let has = run("ip", &["netns", "add", &ns])
            && run(
                "tc",
                &[
                    "-n", &ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                ],
            );
        let _ = run("ip", &["netns", "del", &ns]);
        has
    })
}

/// The mark a duplicate carries, so it is neither dropped nor copied again.
const DUPLICATE_MARK: &str = "0x6a65";

/// The nftables stand-in for netem on the switch's `ports`: each port's
/// egress drops `loss_pct` % of packets and copies `duplicate_pct` % of
/// the rest once.
pub fn netem_nft_rules(ports: &[String], params: &NetemParams) -> String {
    let mut rules = "table netdev jepsen_netem {\n".to_string();
    for port in ports {
        let mut statements = Vec::new();
        if params.loss_pct > 0 {
            statements.push(format!(
                "meta mark != {DUPLICATE_MARK} numgen random mod 100 < {} counter drop;",
                params.loss_pct
            ));
        }
        if params.duplicate_pct > 0 {
            statements.push(format!(
                "meta mark != {DUPLICATE_MARK} numgen random mod 100 < {} counter meta mark set {DUPLICATE_MARK} dup to \"{port}\";",
                params.duplicate_pct
            ));
        }
        rules.push_str(&format!(
            "  chain {port} {{ type filter hook egress device \"{port}\" priority 0; {} }}\n",
            statements.join(" ")
        ));
    }
    rules.push_str("}\n");
    rules
}

/// The other end of a ring cut at `node`: one of the `n - 1` others.
pub fn ring_other(node: usize, n: usize, rng: &mut Rng) -> usize {
    let k = rng.below(n.saturating_sub(1) as u64) as usize;
    if k >= node { k + 1 } else { k }
}

pub fn plan(fault: Fault, aim: &mut Aim) -> Plan {
    let n = BALANCERS.len();
    // Drawn whatever the fault, so each fault's choices are the same for a
    // seed however the others' change.
    let other = ring_other(aim.leader.unwrap_or(aim.node), n, &mut aim.rng);
    let direction = if aim.rng.percent(50) {
        Direction::In
    } else {
        Direction::Out
    };
    let every_port = aim.rng.percent(25);
    let params = NetemParams::draw(&mut aim.rng);
    let (node, shape) = match fault {
        Fault::PartitionRing => (aim.leader.unwrap_or(aim.node), Shape::Ring { other }),
        Fault::PartitionOneway => (aim.node, Shape::OneWay(direction)),
        Fault::Netem => {
            let nodes = if every_port {
                (0..n).collect()
            } else {
                vec![aim.node]
            };
            return Plan::Netem {
                nodes,
                params,
                nft: !kernel_has_netem(),
            };
        }
        _ => (aim.node, Shape::Isolate),
    };
    Plan::Partition {
        node,
        shape,
        role: aim.role(node),
    }
}

impl Plan {
    pub fn about(&self) -> About {
        match self {
            Plan::Partition {
                node, shape, role, ..
            } => {
                let me = BALANCERS[*node];
                let detail = match shape {
                    Shape::Isolate => format!("{me} ({role}) isolated"),
                    Shape::Ring { other } => {
                        let third = (0..BALANCERS.len())
                            .find(|i| i != node && i != other)
                            .map_or("none", |i| BALANCERS[i]);
                        format!(
                            "ring: {me} ({role}) <-> {} cut, {third} sees both",
                            BALANCERS[*other]
                        )
                    }
                    Shape::OneWay(Direction::In) => {
                        format!("one-way: {me} ({role}) drops what the others send")
                    }
                    Shape::OneWay(Direction::Out) => {
                        format!("one-way: {me} ({role}) drops what it sends them")
                    }
                };
                About {
                    node: Some(*node),
                    key: None,
                    detail: Some(detail),
                }
            }
            Plan::Netem { nodes, params, nft } => {
                let ports = ports(nodes);
                let how = if *nft {
                    format!(
                        "nft (no sch_netem in this kernel) loss {}% duplicate {}%; delay and reordering not applied",
                        params.loss_pct, params.duplicate_pct
                    )
                } else {
                    format!("netem {}", params.args().join(" "))
                };
                About {
                    // One port: its balancer; every port: none in particular.
                    node: match nodes.as_slice() {
                        [one] => Some(*one),
                        _ => None,
                    },
                    key: None,
                    detail: Some(format!("{}: {how}", ports.join(","))),
                }
            }
        }
    }
}

/// The nftables script that makes a balancer drop packets from `from` and
/// to `to` (no chain for an empty list).
pub fn partition_rules(from: &[Ipv4Addr], to: &[Ipv4Addr]) -> String {
    let set = |list: &[Ipv4Addr]| {
        list.iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rules = "table inet jepsen {\n".to_string();
    if !from.is_empty() {
        rules.push_str(&format!(
            "  chain in {{ type filter hook input priority -200; ip saddr {{ {} }} drop; }}\n",
            set(from)
        ));
    }
    if !to.is_empty() {
        rules.push_str(&format!(
            "  chain out {{ type filter hook output priority -200; ip daddr {{ {} }} drop; }}\n",
            set(to)
        ));
    }
    rules.push_str("}\n");
    rules
}

/// (from, to): whose packets `node` drops for `shape`, by balancer index.
pub fn cut(node: usize, shape: &Shape, n: usize) -> (Vec<usize>, Vec<usize>) {
    let others: Vec<usize> = (0..n).filter(|i| *i != node).collect();
    match shape {
        Shape::Isolate => (others.clone(), others),
        Shape::Ring { other } => (vec![*other], vec![*other]),
        Shape::OneWay(Direction::In) => (others, Vec::new()),
        Shape::OneWay(Direction::Out) => (Vec::new(), others),
    }
}

pub async fn start(site: &mut Site, plan: &Plan) -> Result<(), String> {
    match plan {
        Plan::Partition { node, shape, .. } => {
            let address = |i: &usize| site.lab.address(BALANCERS[*i]);
            let (from, to) = cut(*node, shape, BALANCERS.len());
            let from: Vec<Ipv4Addr> = from.iter().map(address).collect();
            let to: Vec<Ipv4Addr> = to.iter().map(address).collect();
            netns::nft(&site.lab.ns(BALANCERS[*node]), &partition_rules(&from, &to));
        }
        Plan::Netem {
            nodes,
            params,
            nft: true,
        } => {
            netns::nft(&site.lab.ns("sw"), &netem_nft_rules(&ports(nodes), params));
        }
        Plan::Netem { nodes, params, .. } => {
            for node in nodes {
                let mut args = vec!["qdisc".to_string(), "add".to_string()];
                args.extend(["dev".to_string(), format!("p{}", node + 1), "root".to_string()]);
                args.push("netem".to_string());
                args.extend(params.args());
                tc(site, &args).await;
            }
        }
    }
    Ok(())
}

pub async fn heal(site: &mut Site, plan: &Plan) -> Result<(), String> {
    match plan {
        Plan::Partition { node, .. } => {
            netns::nft(&site.lab.ns(BALANCERS[*node]), "delete table inet jepsen\n");
        }
        Plan::Netem { nft: true, .. } => {
            netns::nft(&site.lab.ns("sw"), "delete table netdev jepsen_netem\n");
        }
        Plan::Netem { nodes, .. } => {
            for node in nodes {
                let port = format!("p{}", node + 1);
                let args = ["qdisc", "del", "dev", &port, "root"].map(str::to_string);
                tc(site, &args).await;
            }
        }
    }
    Ok(())
}

/// The switch's ports of balancers `nodes`: `p1` … (port `p{i+1}` is host i).
fn ports(nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|i| format!("p{}", i + 1)).collect()
}

/// `tc ARGS` in the switch's namespace; panics, with tc's error, if it fails.
async fn tc(site: &Site, args: &[String]) {
    let switch = site.lab.ns("sw");
    let output = tokio::process::Command::new("tc")
        .args(["-n", &switch])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run tc (iproute2): {e}"));
    assert!(
        output.status.success(),
        "tc -n {switch} {} failed: {} (is the sch_netem kernel module available?)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_cuts_one_pair_with_the_leader_at_one_end() {
        let mut others = [0usize; 3];
        for seed in 0..200 {
            let Plan::Partition { node, shape, .. } =
                plan(Fault::PartitionRing, &mut Aim::fixed(2, Some(1), seed))
            else {
                panic!("a partition");
            };
            assert_eq!(node, 1, "the leader is one end");
            let Shape::Ring { other } = shape else {
                panic!("a ring: {shape:?}");
            };
            assert_ne!(other, 1);
            others[other] += 1;
            let (from, to) = cut(node, &shape, 3);
            assert_eq!(
                (from, to),
                (vec![other], vec![other]),
                "exactly one pair, both ways"
            );
        }
        assert!(
            others[0] > 50 && others[2] > 50,
            "both followers drawn: {others:?}"
        );
        // No leader known: the aimed node is the end.
        let Plan::Partition { node, .. } = plan(Fault::PartitionRing, &mut Aim::fixed(2, None, 1)) else {
            panic!("a partition");
        };
        assert_eq!(node, 2);
    }

    #[test]
    fn one_way_partitions_draw_both_directions_and_drop_one_chain() {
        let (mut ins, mut outs) = (0, 0);
        for seed in 0..100 {
            let Plan::Partition { node, shape, .. } =
                plan(Fault::PartitionOneway, &mut Aim::fixed(0, Some(1), seed))
            else {
                panic!("a partition");
            };
            assert_eq!(node, 0, "the aimed node");
            match shape {
                Shape::OneWay(Direction::In) => ins += 1,
                Shape::OneWay(Direction::Out) => outs += 1,
                other => panic!("one-way: {other:?}"),
            }
        }
        assert!(ins > 20 && outs > 20, "{ins} in, {outs} out");
        assert_eq!(cut(0, &Shape::OneWay(Direction::In), 3), (vec![1, 2], vec![]));
        assert_eq!(cut(0, &Shape::OneWay(Direction::Out), 3), (vec![], vec![1, 2]));
        assert_eq!(cut(1, &Shape::Isolate, 3), (vec![0, 2], vec![0, 2]));
    }

    #[test]
    fn partition_rules_hold_a_chain_per_direction() {
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        let both = partition_rules(&[a, b], &[a, b]);
        assert!(
            both.contains("hook input") && both.contains("hook output"),
            "{both}"
        );
        assert!(
            both.contains("ip saddr { 198.18.0.1, 198.18.0.2 } drop"),
            "{both}"
        );
        let inbound = partition_rules(&[a], &[]);
        assert!(
            inbound.contains("hook input") && !inbound.contains("hook output"),
            "{inbound}"
        );
        assert!(inbound.starts_with("table inet jepsen {") && inbound.ends_with("}\n"));
    }

    #[test]
    fn netem_parameters_stay_within_bounds_and_vary() {
        let mut rng = Rng::new(7);
        let drawn: Vec<NetemParams> = (0..500).map(|_| NetemParams::draw(&mut rng)).collect();
        for p in &drawn {
            assert!(p.loss_pct <= MAX_LOSS_PCT, "{p:?}");
            assert!((1..=MAX_DELAY_MS).contains(&p.delay_ms), "{p:?}");
            assert!(p.jitter_ms <= p.delay_ms / 5, "{p:?}");
            assert!(p.duplicate_pct <= MAX_DUPLICATE_PCT, "{p:?}");
            assert!(p.reorder_pct <= MAX_REORDER_PCT, "{p:?}");
        }
        assert!(drawn.iter().any(|p| p.loss_pct == MAX_LOSS_PCT));
        assert!(drawn.iter().any(|p| p.delay_ms == MAX_DELAY_MS));
        assert!(drawn.iter().any(|p| p.jitter_ms > 0));
    }

    #[test]
    fn netem_arguments_leave_zero_parts_out() {
        let full = NetemParams {
            loss_pct: 5,
            delay_ms: 20,
            jitter_ms: 4,
            duplicate_pct: 1,
            reorder_pct: 10,
        };
        assert_eq!(
            full.args().join(" "),
            "loss 5% delay 20ms 4ms distribution normal duplicate 1% reorder 10%"
        );
        let bare = NetemParams {
            loss_pct: 0,
            jitter_ms: 0,
            duplicate_pct: 0,
            reorder_pct: 0,
            ..full
        };
        assert_eq!(bare.args().join(" "), "delay 20ms");
    }

    #[test]
    fn the_nft_stand_in_drops_and_copies_once_on_each_port() {
        let params = NetemParams {
            loss_pct: 16,
            delay_ms: 20,
            jitter_ms: 0,
            duplicate_pct: 4,
            reorder_pct: 3,
        };
        let rules = netem_nft_rules(&ports(&[0, 2]), &params);
        assert!(rules.starts_with("table netdev jepsen_netem {"), "{rules}");
        assert!(
            rules.contains("chain p1 { type filter hook egress device \"p1\""),
            "{rules}"
        );
        assert!(rules.contains("chain p3 {"), "{rules}");
        assert!(
            rules.contains("numgen random mod 100 < 16 counter drop;"),
            "{rules}"
        );
        assert!(
            rules.contains("numgen random mod 100 < 4 counter meta mark set 0x6a65 dup to \"p3\";"),
            "{rules}"
        );
        let quiet = NetemParams {
            loss_pct: 0,
            duplicate_pct: 0,
            ..params
        };
        assert!(!netem_nft_rules(&ports(&[1]), &quiet).contains("numgen"));
    }

    #[test]
    fn netem_takes_one_port_or_every_port() {
        let (mut one, mut every) = (0, 0);
        for seed in 0..200 {
            let Plan::Netem { nodes, .. } = plan(Fault::Netem, &mut Aim::fixed(2, Some(0), seed)) else {
                panic!("netem");
            };
            match nodes.as_slice() {
                [2] => one += 1,
                [0, 1, 2] => every += 1,
                other => panic!("ports {other:?}"),
            }
        }
        assert!(one > every && every > 20, "{one} one, {every} every");
    }
}
