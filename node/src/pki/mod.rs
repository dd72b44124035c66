//! The cluster's own public-key infrastructure: who may talk to a node's
//! Raft and admin port, proven by certificates rather than a shared
//! secret. One CA per cluster; a node's id, or a person's name and role,
//! and the cluster id are in each certificate (see [`identity`]).
//!
//! - [`identity`]: the `raftlb://CLUSTER/node/ID` and
//!   `raftlb://CLUSTER/admin|read/NAME` identities in certificates.
//! - [`issue`]: making the CA, node and client certificates (`raftlb certs`).
//! - [`material`]: reading and checking a CA bundle, certificate and key.
//! - [`keyring`]: the current identity, reloaded when its files change, and
//!   the rustls configurations (TLS 1.3, client certificates required).
//! - [`watch`]: re-reading the files (every second, and on SIGHUP) and
//!   warning before the certificate expires.
//! - [`explain`]: TLS failures as sentences for the side that saw them.

pub mod explain;
pub mod identity;
pub mod issue;
pub mod keyring;
pub mod material;
pub mod watch;

pub use identity::{Identity, Role, Subject};
pub use keyring::{Expect, Keyring};
pub use material::Files;
