//! The Raft section of `/metrics`: term, leadership and how often it
//! changed, the log's commit, applied and last indexes, the proposals
//! waiting, the last snapshot, the members by role, and how long this node
//! has been without a quorum.

use crate::control::gauges::Gauges;
use crate::control::types::Metrics;
use openraft::ServerState;
use std::time::Duration;

/// Writes the Raft metrics from openraft's `raft` and the control plane's
/// `gauges`; `no_quorum` is how long this node has been without one.
pub(super) fn render(
    metric: &mut impl FnMut(&str, &str, &str, &[(String, f64)]),
    raft: &Metrics,
    gauges: &Gauges,
    no_quorum: Option<Duration>,
) {
    let one = |value: f64| vec![(String::new(), value)];
    metric(
        "raft_term",
        "gauge",
        "Current Raft term.",
        &one(raft.current_term as f64),
    );
    metric(
        "raft_leader",
        "gauge",
        "1 while this node is the Raft leader.",
        &one(f64::from(u8::from(raft.state == ServerState::Leader))),
    );
    metric(
        "raft_leader_changes_total",
        "counter",
        "Times this node saw the leader change (to no leader included).",
        &one(gauges.leader_changes() as f64),
    );
    metric(
        "raft_commit_index",
        "gauge",
        "Last log index this node knows committed.",
        &one(gauges.commit_index() as f64),
    );
    metric(
        "raft_applied_index",
        "gauge",
        "Last log index applied here.",
        &one(raft.last_applied.map_or(0, |id| id.index) as f64),
    );
    metric(
        "raft_last_log_index",
        "gauge",
        "Last log index appended to this node's log.",
        &one(raft.last_log_index.unwrap_or(0) as f64),
    );
    metric(
        "raft_proposal_queue_depth",
        "gauge",
        "Proposals waiting in this node's proposal queue plus writes in flight to the leader (a batch counts once).",
        &one(gauges.proposal_queue_depth() as f64),
    );
    metric(
        "raft_snapshot_index",
        "gauge",
        "Last log index in the last snapshot built or installed here (0: none).",
        &one(raft.snapshot.map_or(0, |id| id.index) as f64),
    );
    metric(
        "raft_snapshot_bytes",
        "gauge",
        "Size of the last snapshot built or installed here, as stored in the data dir.",
        &one(gauges.snapshot_bytes() as f64),
    );
    let membership = raft.membership_config.membership();
    metric(
        "raft_members",
        "gauge",
        "Cluster members by role, in this node's latest membership.",
        &[
            (
                "{role=\"voter\"}".to_string(),
                membership.voter_ids().count() as f64,
            ),
            (
                "{role=\"learner\"}".to_string(),
                membership.learner_ids().count() as f64,
            ),
        ],
    );
    metric(
        "no_quorum_seconds",
        "gauge",
        "How long this node has not seen a quorum (0 while it does).",
        &one(no_quorum.map_or(0.0, |d| d.as_secs_f64())),
    );
}
