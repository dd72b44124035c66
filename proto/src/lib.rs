//! # raftlb-proto
//!
//! The gRPC services every node serves on its `[cluster] raft` address:
//! - [`raft`]: node-to-node Raft RPCs; openraft's messages travel as postcard
//!   bytes inside protobuf `bytes` fields.
//! - [`admin`]: the admin API `raftlb ctl` speaks.
//!
//! Both carry the cluster id and cluster token as gRPC metadata under
//! [`CLUSTER_ID_HEADER`] and [`CLUSTER_TOKEN_HEADER`].

/// Metadata key holding the sender's cluster id.
pub const CLUSTER_ID_HEADER: &str = "x-raftlb-cluster";
/// Metadata key holding the shared cluster token.
pub const CLUSTER_TOKEN_HEADER: &str = "x-raftlb-token";

#[allow(missing_debug_implementations, clippy::unwrap_used)]
pub mod raft {
    tonic::include_proto!("raftlb.raft.v1");
}

#[allow(missing_debug_implementations, clippy::unwrap_used)]
pub mod admin {
    tonic::include_proto!("raftlb.admin.v1");
}
