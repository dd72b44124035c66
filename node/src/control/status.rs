//! `ctl status` as one node answers it: its Raft state, the leader and
//! members it knows, its log position, whether it sees a quorum, the
//! VIPs it holds, and the format versions of it, its members and the
//! cluster.

use super::leadership::Leadership;
use super::state_machine::Applied;
use super::types::{NodeId, Raft};
use super::versions::Versions;
use openraft::ServerState;
use raftlb_config::RaftTiming;
use raftlb_proto::admin::{Member, StatusReply};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// What `status` reads.
#[derive(Clone)]
pub struct StatusView {
    pub me: NodeId,
    pub cluster_id: String,
    pub raft: Raft,
    pub leadership: watch::Receiver<Leadership>,
    pub timing: RaftTiming,
    /// When the node started: without a quorum since then if it never saw one.
    pub started: Instant,
    /// The VIPs this node holds, as the VIP manager publishes them.
    pub vips: watch::Receiver<Vec<String>>,
    pub versions: Arc<Versions>,
    pub applied: watch::Receiver<Arc<Applied>>,
}

impl std::fmt::Debug for StatusView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusView").finish_non_exhaustive()
    }
}

impl StatusView {
    pub fn reply(&self) -> StatusReply {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched = metrics.replication.as_ref();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let formats = self.versions.of(*id);
                (id, node, formats)
            })
            .map(|(id, node, formats)| Member {
                format_min: formats.map_or(0, |f| u32::from(f.min)),
                format_max: formats.map_or(0, |f| u32::from(f.max)),
                id: *id,
                address: node.addr.clone(),
                role: if voters.contains(id) { "voter" } else { "learner" }.to_string(),
                matched_index: matched
                    .and_then(|m| m.get(id))
                    .and_then(|log_id| log_id.map(|l| l.index))
                    .unwrap_or(0),
            })
            .collect();
        let leader_address = metrics
            .current_leader
            .and_then(|id| membership.get_node(&id))
            .map(|node| node.addr.clone())
            .unwrap_or_default();
        let state = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        StatusReply {
            node_id: self.me,
            cluster_id: self.cluster_id.clone(),
            state: state.to_string(),
            term: metrics.current_term,
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_address,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            members,
            millis_since_quorum_ack: metrics
                .millis_since_quorum_ack
                .map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            no_quorum_ms: self
                .leadership
                .borrow()
                .without_quorum(self.timing, self.started)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            vips: self.vips.borrow().clone(),
            format_min: u32::from(self.versions.this().min),
            format_max: u32::from(self.versions.this().max),
            cluster_version: u32::from(self.applied.borrow().state.cluster_version()),
            pid: std::process::id(),
        }
    }
}
