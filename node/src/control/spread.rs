//! The leader's side of `placement = "spread"` VIPs: it grants leases on
//! them to the balancers they are assigned to, and assigns each to a live
//! balancer.
//!
//! An owner asks every heartbeat; the leader grants a VIP only while its
//! own leadership was confirmed less than one election timeout ago and its
//! state assigns the VIP to the asker. The owner counts the lease (one
//! election timeout) from before it asked. A grant by a leader that has
//! since been deposed therefore ends by that leader's last confirmation
//! plus two election timeouts, which is no later than its successor's
//! election (voters, the old leader included, refuse to vote that long), so
//! a new leader may reassign at once. The current leader moves a VIP only
//! once its own last grant of it to another node is a lease old.
//!
//! [`LeaseDesk`] is both sides of the ask: [`LeaseDesk::ask`] on the
//! owner, [`LeaseDesk::grant`] on the leader (the `LeaseVips` call).

use super::leader_link::LeaderLink;
use super::leadership::Leadership;
use super::state_machine::Applied;
use super::types::{NodeId, Raft};
use raftlb_config::RaftTiming;
use raftlb_config::{Command, Proposal};
use raftlb_proto::admin::LeaseVipsRequest;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::Status;

/// Asks for and grants spread-VIP leases.
#[derive(Clone)]
pub struct LeaseDesk {
    pub me: NodeId,
    pub raft: Raft,
    pub leases: SharedLeases,
    pub leadership: watch::Receiver<Leadership>,
    pub applied: watch::Receiver<Arc<Applied>>,
    pub timing: RaftTiming,
    pub link: LeaderLink,
}

impl std::fmt::Debug for LeaseDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseDesk").finish_non_exhaustive()
    }
}

impl LeaseDesk {
    /// Asks the leader for the lease on `vips` (this node's spread VIPs);
    /// returns those granted.
    pub async fn ask(&self, vips: &[IpAddr]) -> Result<Vec<IpAddr>, Status> {
        let mut leader = self.link.leader()?;
        let request = LeaseVipsRequest {
            node_id: self.me,
            vips: vips.iter().map(ToString::to_string).collect(),
        };
        let reply = leader.lease_vips(request).await?.into_inner();
        Ok(reply.granted.iter().filter_map(|v| v.parse().ok()).collect())
    }

    /// As leader: commits `vip`'s assignment to `owner` (or to nobody).
    /// Never passed on: a node that stopped leading has no plan to give.
    pub async fn assign(&self, vip: IpAddr, owner: Option<NodeId>) -> Result<(), String> {
        let command = Command::AssignVip { address: vip, owner };
        let proposal = Proposal::new(self.applied.borrow().state.cluster_version(), command);
        match tokio::time::timeout(self.timing.election_timeout, self.raft.client_write(proposal)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("not committed in time".to_string()),
        }
    }

    /// Those VIPs' leases, for assigning: who asked lately, the last grants.
    pub fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// As leader: grants `node` the lease on those of `vips` the state
    /// assigns to it, while this node's leadership is freshly confirmed.
    pub fn grant(&self, node: NodeId, vips: &[String]) -> Result<Vec<IpAddr>, Status> {
        let fresh = self
            .leadership
            .borrow()
            .confirmed_at
            .is_some_and(|at| at.elapsed() < self.timing.election_timeout);
        if !fresh {
            return Err(Status::unavailable("not a leader confirmed by a quorum just now"));
        }
        let applied = Arc::clone(&self.applied.borrow());
        let granted: Vec<IpAddr> = vips
            .iter()
            .filter_map(|v| v.parse().ok())
            .filter(|vip| applied.state.vip_owner(*vip) == Some(node))
            .collect();
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(node, &granted);
        Ok(granted)
    }
}

/// Who asked lately, and the last grant of each VIP.
#[derive(Debug, Default)]
pub struct Leases {
    seen: HashMap<NodeId, Instant>,
    grants: HashMap<IpAddr, (NodeId, Instant)>,
}

/// Shared by the admin service (granting) and the VIP manager (assigning).
pub type SharedLeases = Arc<Mutex<Leases>>;

impl Leases {
    /// `node` asked for the VIPs in `granted`, which it is given now.
    pub fn record(&mut self, node: NodeId, granted: &[IpAddr]) {
        let now = Instant::now();
        self.seen.insert(node, now);
        for vip in granted {
            self.grants.insert(*vip, (node, now));
        }
    }

    /// The nodes that asked within `within`, in id order.
    pub fn live(&self, within: Duration) -> Vec<NodeId> {
        let mut live: Vec<NodeId> = self
            .seen
            .iter()
            .filter(|(_, at)| at.elapsed() < within)
            .map(|(id, _)| *id)
            .collect();
        live.sort_unstable();
        live
    }

    /// Whether `vip` may go to `node`: nobody else holds a grant on it that
    /// may still be running.
    pub fn may_assign(&self, vip: IpAddr, node: NodeId, lease: Duration) -> bool {
        match self.grants.get(&vip) {
            Some((holder, at)) => *holder == node || at.elapsed() > lease,
            None => true,
        }
    }
}

/// What to change so that every spread VIP has a live owner and the live
/// nodes hold as even a share as can be: an owner keeps its VIPs while it
/// lives; an unowned VIP, or one of a node that stopped asking, goes to the
/// live node with the fewest (lowest id first). When one node holds two
/// more than another and nothing is in flight, one of its VIPs is
/// unassigned (`None`) so that, once its lease has run out, it can go to
/// the emptier node: a move between live nodes never hands over a VIP whose
/// old lease may still run.
pub fn plan(
    vips: &[IpAddr],
    owners: &std::collections::BTreeMap<IpAddr, NodeId>,
    live: &[NodeId],
) -> Vec<(IpAddr, Option<NodeId>)> {
    if live.is_empty() {
        return Vec::new();
    }
    let mut load: HashMap<NodeId, usize> = live.iter().map(|n| (*n, 0)).collect();
    for vip in vips {
        if let Some(owner) = owners.get(vip)
            && let Some(count) = load.get_mut(owner)
        {
            *count += 1;
        }
    }
    let least_loaded = |load: &HashMap<NodeId, usize>| {
        live.iter()
            .copied()
            .min_by_key(|n| (load[n], *n))
            .unwrap_or(live[0])
    };
    let mut changes = Vec::new();
    for vip in vips {
        if owners.get(vip).is_some_and(|o| load.contains_key(o)) {
            continue;
        }
        let target = least_loaded(&load);
        *load.entry(target).or_default() += 1;
        changes.push((*vip, Some(target)));
    }
    if changes.is_empty() {
        let busiest = live
            .iter()
            .copied()
            .max_by_key(|n| (load[n], std::cmp::Reverse(*n)));
        let emptiest = least_loaded(&load);
        if let Some(busiest) = busiest
            && load[&busiest] >= load[&emptiest] + 2
            && let Some(vip) = vips.iter().rev().find(|v| owners.get(v) == Some(&busiest))
        {
            changes.push((*vip, None));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn spreads_evenly_and_moves_only_what_a_dead_node_held() {
        let vips = [ip(1), ip(2), ip(3)];
        let first = plan(&vips, &BTreeMap::new(), &[1, 2, 3]);
        assert_eq!(first, vec![(ip(1), Some(1)), (ip(2), Some(2)), (ip(3), Some(3))]);
        let owners: BTreeMap<_, _> = first.into_iter().map(|(v, n)| (v, n.unwrap())).collect();
        assert_eq!(plan(&vips, &owners, &[1, 2, 3]), vec![], "a settled plan stays");
        assert_eq!(
            plan(&vips, &owners, &[1, 3]),
            vec![(ip(2), Some(1))],
            "only node 2's VIP moves"
        );
        assert_eq!(plan(&vips, &owners, &[]), vec![], "nobody to give it to");
    }

    #[test]
    fn a_node_that_holds_two_more_gives_one_up() {
        let vips = [ip(1), ip(2), ip(3)];
        let all_on_1: BTreeMap<_, _> = vips.iter().map(|v| (*v, 1)).collect();
        assert_eq!(plan(&vips, &all_on_1, &[1, 2, 3]), vec![(ip(3), None)]);
        let mut one_moving = all_on_1.clone();
        one_moving.remove(&ip(3));
        assert_eq!(plan(&vips, &one_moving, &[1, 2, 3]), vec![(ip(3), Some(2))]);
        let two_and_one: BTreeMap<_, _> = [(ip(1), 1), (ip(2), 1), (ip(3), 2)].into_iter().collect();
        assert_eq!(
            plan(&vips, &two_and_one, &[1, 2]),
            vec![],
            "2 and 1 is as even as it gets"
        );
    }
}
