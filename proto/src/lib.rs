//! # raftlb-proto
//!
//! The gRPC services every node serves on its `[cluster] raft` address:
//! - [`raft`]: node-to-node Raft RPCs; openraft's messages travel as postcard
//!   bytes inside protobuf `bytes` fields.
//! - [`admin`]: the admin API `raftlb ctl` speaks.
//!
//! Both run over mutual TLS: who calls is the identity in the caller's
//! certificate (see the node's `pki` and `control::authz`).

#[allow(missing_debug_implementations, clippy::unwrap_used)]
pub mod raft {
    tonic::include_proto!("raftlb.raft.v1");
}

#[allow(missing_debug_implementations, clippy::unwrap_used)]
pub mod admin {
    tonic::include_proto!("raftlb.admin.v1");
}
