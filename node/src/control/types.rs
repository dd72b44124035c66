//! The openraft type configuration: what the log carries ([`Proposal`]: a
//! command with its format version), what
//! applying an entry answers ([`Outcome`]), and the aliases the rest of the
//! control plane uses so that no other file spells out openraft's generics;
//! and openraft's settings, from raftlb's timings ([`raft_config`]).

use raftlb_config::{Outcome, Proposal, RaftTiming};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// raftlb's Raft: u64 node ids, nodes known by their gRPC address.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Metrics = openraft::RaftMetrics<NodeId, Node>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Raft settings. openraft's follower lease (`election_timeout_max`) is
/// the vote lease; it never stands for election by itself
/// (`enable_elect`): [`election`](super::election) asks first (pre-vote)
/// and then triggers it. Its own timer would fire at the lease plus a
/// random part of `election_timeout_min`, unasked.
pub fn raft_config(cluster: &str, timing: RaftTiming) -> Result<openraft::Config, String> {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let lease = millis(timing.vote_lease());
    openraft::Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: millis(timing.heartbeat_interval),
        election_timeout_min: lease / 2,
        election_timeout_max: lease,
        enable_elect: false,
        install_snapshot_timeout: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1000,
        purge_batch_size: 256,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}
