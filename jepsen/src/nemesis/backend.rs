//! Backend faults. Backend k is the one on port 80 + k of the backend host
//! (however many the site runs: [`Site::backends`]); k is drawn
//! from the seed. Recorded with `key` = k, and `node` = the balancer for a
//! partition (checkers of backend health rely on this).
//!
//! - `backend-kill`: the backend refuses connections: an nftables rule in
//!   the backend host's namespace answers every TCP packet to its port with
//!   a reset, new connections and established ones alike, which is what a
//!   dead process's port answers. (The site owns its in-process backends
//!   privately; stopping and rebinding one would mean restructuring the
//!   fixture, and the balancers cannot tell the difference.)
//! - `backend-partition`: one balancer (the leader three times in four)
//!   drops every packet to and from the backend's port; the other
//!   balancers still reach it.
//!
//! The heal deletes the table (`inet jepsen_backend`).

use super::{About, Aim};
use crate::nemesis::Fault;
use raftlb_tests::netns;
use raftlb_tests::site::{BALANCERS, Site};
use std::net::SocketAddr;

#[derive(Debug)]
pub enum Plan {
    Kill {
        key: u32,
        address: SocketAddr,
    },
    Partition {
        key: u32,
        address: SocketAddr,
        node: usize,
        role: &'static str,
    },
    /// The site runs no backend: nothing to do.
    Nothing,
}

pub fn plan(fault: Fault, site: &Site, aim: &mut Aim) -> Plan {
    // In port order: backend k listens on port 80 + k.
    let backends: Vec<_> = site.backends().iter().map(|b| b.address).collect();
    let draw = aim.rng.next_u64();
    if backends.is_empty() {
        return Plan::Nothing;
    }
    let k = (draw % backends.len() as u64) as usize;
    let (key, address) = (u32::try_from(k).unwrap_or(u32::MAX), backends[k]);
    match fault {
        Fault::BackendPartition => Plan::Partition {
            key,
            address,
            node: aim.node,
            role: aim.role(aim.node),
        },
        _ => Plan::Kill { key, address },
    }
}

impl Plan {
    pub fn about(&self) -> About {
        match self {
            Plan::Kill { key, address } => About {
                node: None,
                key: Some(*key),
                detail: Some(format!("backend {address} refuses connections")),
            },
            Plan::Partition {
                key,
                address,
                node,
                role,
            } => About {
                node: Some(*node),
                key: Some(*key),
                detail: Some(format!(
                    "{} ({role}) cut from backend {address}",
                    BALANCERS[*node]
                )),
            },
            Plan::Nothing => About {
                detail: Some("the site has no backend".to_string()),
                ..About::default()
            },
        }
    }
}

/// `ip` or `ip6`: nftables' name for `address`'s family.
fn family(address: &SocketAddr) -> &'static str {
    if address.is_ipv4() { "ip" } else { "ip6" }
}

/// The backend host's rule: a reset for every TCP packet to `address`'s port.
pub fn kill_rules(address: &SocketAddr) -> String {
    format!(
        "table inet jepsen_backend {{\n  chain in {{ type filter hook input priority -200; \
         {} daddr {} tcp dport {} reject with tcp reset; }}\n}}\n",
        family(address),
        address.ip(),
        address.port()
    )
}

/// A balancer's rules: drop what goes to `address` and what comes from it.
pub fn partition_rules(address: &SocketAddr) -> String {
    let (family, ip, port) = (family(address), address.ip(), address.port());
    format!(
        "table inet jepsen_backend {{\n  \
         chain in {{ type filter hook input priority -200; {family} saddr {ip} tcp sport {port} drop; }}\n  \
         chain out {{ type filter hook output priority -200; {family} daddr {ip} tcp dport {port} drop; }}\n}}\n"
    )
}

/// The namespace the plan's table lives in.
fn namespace(site: &Site, plan: &Plan) -> Option<String> {
    match plan {
        Plan::Kill { .. } => Some(site.lab.ns("backend")),
        Plan::Partition { node, .. } => Some(site.lab.ns(BALANCERS[*node])),
        Plan::Nothing => None,
    }
}

pub fn start(site: &mut Site, plan: &Plan) -> Result<(), String> {
    let rules = match plan {
        Plan::Kill { address, .. } => kill_rules(address),
        Plan::Partition { address, .. } => partition_rules(address),
        Plan::Nothing => return Err("the site has no backend".to_string()),
    };
    if let Some(ns) = namespace(site, plan) {
        netns::nft(&ns, &rules);
    }
    Ok(())
}

pub fn heal(site: &mut Site, plan: &Plan) -> Result<(), String> {
    if let Some(ns) = namespace(site, plan) {
        netns::nft(&ns, "delete table inet jepsen_backend\n");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_backend_resets_its_port_and_a_partition_drops_both_ways() {
        let address: SocketAddr = "198.18.0.5:81".parse().unwrap();
        let kill = kill_rules(&address);
        assert!(
            kill.contains("ip daddr 198.18.0.5 tcp dport 81 reject with tcp reset"),
            "{kill}"
        );
        let cut = partition_rules(&address);
        assert!(cut.contains("ip saddr 198.18.0.5 tcp sport 81 drop"), "{cut}");
        assert!(cut.contains("ip daddr 198.18.0.5 tcp dport 81 drop"), "{cut}");
        let v6: SocketAddr = "[2001:2::5]:80".parse().unwrap();
        assert!(kill_rules(&v6).contains("ip6 daddr 2001:2::5 tcp dport 80"));
    }

    #[test]
    fn the_history_names_the_backend_and_the_balancer() {
        let address: SocketAddr = "198.18.0.5:82".parse().unwrap();
        let about = Plan::Partition {
            key: 2,
            address,
            node: 1,
            role: "leader",
        }
        .about();
        assert_eq!((about.node, about.key), (Some(1), Some(2)));
        let about = Plan::Kill { key: 0, address }.about();
        assert_eq!((about.node, about.key), (None, Some(0)));
    }
}
