//! # raftlb-node
//!
//! Everything a raftlb balancer node does with sockets. The binary `raftlb`
//! (`main.rs`) is a thin CLI over this library.
//!
//! ## Layout
//! - [`node`]: assembles a node from its configuration and runs it to a drained stop.
//! - [`control`]: the Raft control plane: replicated state, storage, gRPC, admin API.
//! - [`view`]: [`view::ClusterView`], the immutable snapshot the data plane
//!   routes by, swapped atomically when the configuration changes.
//! - [`backend`]: a backend's live state on this node: work in hand under
//!   `max_connections`, the pool's wait queue, health bits, latency.
//! - [`balance`]: the [`balance::Balancer`] trait and one file per algorithm.
//! - [`dataplane`]: listeners, admission (ACLs, per-source limits) and accept loops; `l4/` (TCP splice, UDP
//!   sessions), `l7/` (HTTP server, proxying, header rewriting, response
//!   bodies, connections to backends and their keep-alive pools),
//!   `upstream` (choosing a backend that answers, waiting for room).
//! - [`health`]: active checks, outlier ejection, panic, slow start and the
//!   retry budget: which backends this node sends new work to.
//! - [`gslb`]: the authoritative DNS server of `[gslb]` (every balancer)
//!   and the leader's site checks.
//! - [`capabilities`]: raising the network capabilities a non-root node was permitted.
//! - [`descriptors`]: the open-file limit, raised at start, and the data plane's share of it.
//! - [`metrics`]: Prometheus `/metrics`, `/healthz` and `/readyz` (`[node] metrics`).
//! - [`status_page`]: the live status page beside it (`/`, `/api/status`),
//!   every member's view merged; [`events`]: this node's recent events.
//! - [`readiness`]: whether the node is ready for traffic (listeners bound,
//!   cluster joined, not draining); [`systemd`]: telling systemd so
//!   (`READY=1`, `STOPPING=1`, `WATCHDOG=1`).
//! - [`histogram`]: the lock-free duration histogram behind the metrics.
//! - [`access_log`]: one record per request and L4 connection, counted in
//!   the traffic metrics and written as an access log line (`[node] access_log`).
//! - [`sticky`]: sticky sessions: lookups, proposals, the cookie, upkeep.
//! - [`tls`]: certificates by SNI and the rustls configuration of `https` listeners.
//! - [`vip`]: virtual IPs held by the Raft leader under a kernel-fenced lease.
//! - [`upgrade`]: in-place upgrade: every listening socket and the data dir's
//!   lock handed to a successor process (SIGUSR2, `raftlb run --upgrade`).
//! - [`reload`]: reading the config file, at start and again (SIGHUP,
//!   `raftlb reload` over the upgrade socket).
//! - [`demo`]: built-in backends for `raftlb demo` and `raftlb backend`.
//! - [`probe`]: `raftlb probe`, one HTTP GET for health checks without curl.
//! - [`ctl`]: `raftlb ctl`, the admin CLI client that talks to any node's admin API.
//! - [`pki`]: the cluster's certificates and mutual TLS: identities, issuing
//!   (`raftlb certs`, in [`certs`]), loading, reloading and verifying.
//! - [`failpoint`]: bugs planted on purpose for the jepsen harness, compiled
//!   only with the cargo feature `failpoints`.
//! - `fuzzing` (hidden): the parsers the fuzz targets in `fuzz/` drive.
//!
//! The request path loads the view once per connection or request and never
//! takes a lock shared beyond one backend (but a sticky pool's table-shard
//! read lock, and the set of four client sources its own source's counters
//! share in the listener's admission table), nor awaits anything but sockets (and, with `sync` sticky
//! sessions, a new session's commit).

pub mod access_log;
pub mod backend;
pub mod balance;
pub mod capabilities;
pub mod certs;
pub mod control;
pub mod ctl;
pub mod dataplane;
pub mod demo;
pub mod descriptors;
pub mod events;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod gslb;
pub mod health;
pub mod histogram;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod probe;
pub mod readiness;
pub mod reload;
pub mod shard;
pub mod status_page;
pub mod sticky;
pub mod systemd;
pub mod tls;
pub mod upgrade;
pub mod view;
pub mod vip;
