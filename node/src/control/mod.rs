//! The control plane: Raft (openraft) replicating the
//! [`ClusterState`](raftlb_config::ClusterState) every node routes by.
//!
//! - [`cluster`]: [`ControlPlane`], one node's Raft from start to stop
//!   (forming the cluster, seeding it from the file, drift warnings).
//! - [`types`]: the openraft type configuration and aliases.
//! - [`log_store`]: the Raft log and vote on disk, fsynced before acknowledging
//!   ([`log_sync`]), every entry sealed under a key [`log_keys`] forgets at
//!   each purge; its entries' file is [`log_file`], its vote, purge point and
//!   committed id [`log_meta`]; [`log_migration`] moves a log out of sled
//!   (data dirs of formats 1 to 3).
//! - [`state_machine`]: the applied state in memory, snapshots on disk; every
//!   applied batch is published on a watch channel the data plane follows.
//! - [`network`] and [`raft_service`]: node-to-node Raft over tonic gRPC.
//! - [`transport`]: the TLS (or loopback cleartext) connections under both
//!   services, accepted and dialled; [`authz`]: who may call what.
//! - [`admin_service`]: the admin API `raftlb ctl` speaks, over
//!   [`writer`] (writes and reads through the leader), [`leader_link`]
//!   (passing a call on to the leader, once), [`membership`] and
//!   [`status`].
//! - [`proposer`]: the data plane's batching door into the log.
//! - [`reconcile`]: the config file against the cluster state: seeding,
//!   and committing or reporting the file's differences.
//! - [`gauges`]: what `/metrics` reads beyond openraft's metrics (commit
//!   index, proposal queue, snapshot size, leader changes, VIP leases).
//! - [`leadership`]: leadership confirmed by a quorum every heartbeat, and
//!   since when a quorum has been missing.
//! - [`election`]: when a follower stands: after its lease on the leader,
//!   in its turn, and only once a majority would vote for it (pre-vote).
//! - [`spread`]: leases on and assignment of `placement = "spread"` VIPs.
//! - [`sticky_admin`]: the admin API's sticky-table calls.
//! - [`transfer`]: planned leadership transfer (openraft 0.9 has none).
//! - [`data_dir`]: the identity file that keeps a node off another's data,
//!   and the format version its files are written in.
//! - [`discovery`] and [`dns`]: the leader resolving pools' DNS discovery
//!   and committing each change of backend set.
//! - [`versions`]: the format versions of this node and its peers, the
//!   format a proposal is written in, and raising the cluster version.

pub mod admin_service;
pub mod authz;
pub mod catch_up;
pub mod cluster;
pub mod data_dir;
pub mod discovery;
pub mod dns;
pub mod election;
pub mod gauges;
pub mod leader_link;
pub mod leadership;
pub mod log_file;
pub mod log_keys;
pub mod log_meta;
pub mod log_migration;
pub mod log_store;
pub mod log_sync;
pub mod membership;
pub mod network;
pub mod proposer;
pub mod raft_service;
pub mod reconcile;
pub mod spread;
pub mod stall_watch;
pub mod state_machine;
pub mod status;
pub mod sticky_admin;
pub mod transfer;
pub mod transport;
pub mod types;
pub mod versions;
pub mod writer;

pub use cluster::{ControlError, ControlPlane, VipControl};
