//! The openraft type configuration: what the log carries ([`Proposal`]: a
//! command with its format version), what
//! applying an entry answers ([`Outcome`]), and the aliases the rest of the
//! control plane uses so that no other file spells out openraft's generics.

use raftlb_config::{Outcome, Proposal};
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
