//! # raftlb-config
//!
//! Everything raftlb replicates, as plain data, and the TOML file that seeds it.
//! No I/O, no async, no clock: the node reads the file and hands this crate its
//! text; this crate answers with a typed [`Config`] or with *every* problem it
//! found, each naming the file, the line and the key.
//!
//! ## Layout
//! - [`spec`]: the typed model (listeners, pools, backends, node settings). The
//!   same types are what later versions replicate through Raft.
//! - [`acl`]: source-address allow and deny rules of listeners.
//! - [`backend_limits`]: how much work a pool's backends take at once, and
//!   what waits (`max_connections`, `max_queue`).
//! - [`client_limits`]: what one client may do on a listener (`[listener.limits]`).
//! - [`http_limits`]: what an HTTP listener allows its clients (sizes,
//!   deadlines for slow clients, backend streams per connection).
//! - [`certificate`]: TLS certificates with their keys, as replicated.
//! - [`command`]: [`Command`], what the Raft log carries, and its [`Outcome`].
//! - [`state`]: [`ClusterState`] and its pure, deterministic `apply`.
//! - [`format`]: format versions, what a binary reads and writes, and the
//!   cluster's effective version.
//! - [`gslb`]: the `[gslb]` zone, its names and sites, the committed site
//!   verdicts, and which site answers (pure).
//! - [`proposal`]: [`Proposal`], a command with its format, as log entries
//!   carry it.
//! - [`proxy`]: the PROXY protocol settings of listeners and pools, and
//!   the proxies an HTTP listener trusts about `X-Forwarded-For`.
//! - [`discovery`]: a pool's DNS discovery, its committed status, and the
//!   pure rules the leader follows (answers into backend sets, failures,
//!   the NXDOMAIN hold); applying `SetDiscovered` beside static backends.
//! - [`quic`]: HTTP/3 on `https` listeners and routing by QUIC connection
//!   ID on `udp` ones.
//! - [`snapshot_data`]: the state and sticky tables as snapshots hold them.
//! - [`health`]: active and passive health settings, retries, and the
//!   health verdicts each node commits.
//! - [`route`]: content-routing rules of HTTP listeners.
//! - [`sticky`]: sticky-session policies, keys and the changes the log carries.
//! - [`sticky_table`]: [`StickyTables`], the committed sessions, changed in place.
//! - [`diff`]: the commands that turn one spec into another (`ctl diff/apply`).
//! - [`duration`]: the `"250ms"`, `"10s"`, `"30m"` duration syntax.
//! - [`error`]: [`ConfigError`] (one problem) and [`ConfigErrors`] (all of them).
//! - [`validate`]: the checks of typed values (a command, a listener, a
//!   pool) without the state: the file's checks, for values from the API.
//! - [`limits`]: every numeric bound, shared by the file and `validate`.
//! - `decode` (private): bounded decoding of batches (depth and length).
//! - `draft` (private): the spec while an entry is applied, with its indexes.
//! - `reader` (private): a walker over the spanned TOML tree that records each
//!   type error, missing key and unknown key with its line, and keeps going.
//! - `file` (private): the file schema, section by section, built on `reader`;
//!   `file::across` holds the checks that look across sections (duplicate
//!   names, dangling pool references, bind conflicts).

pub mod access_log;
pub mod acl;
pub mod backend_limits;
pub mod certificate;
pub mod client_limits;
pub mod command;
mod decode;
pub mod diff;
pub mod discovery;
mod draft;
pub mod duration;
pub mod error;
mod file;
pub mod format;
pub mod gslb;
pub mod health;
pub mod http_limits;
pub mod limits;
pub mod membership;
pub mod peer_address;
pub mod proposal;
pub mod proxy;
pub mod quic;
mod reader;
pub mod route;
pub mod snapshot_data;
pub mod spec;
pub mod state;
pub mod sticky;
pub mod sticky_table;
pub mod validate;

pub use access_log::{AccessLogFormat, AccessLogSpec};
pub use acl::{AclAction, AclChange, AclRule, Cidr};
pub use backend_limits::ConnectionLimits;
pub use certificate::Certificate;
pub use client_limits::ClientLimits;
pub use command::{Command, Outcome};
pub use error::{ConfigError, ConfigErrors};
pub use format::Formats;
pub use health::{HealthCheck, HealthReports, HttpProbe, OutlierDetection, PoolHealth, Probe, RetryPolicy};
pub use peer_address::PeerAddress;
pub use proposal::Proposal;
pub use proxy::ProxyVersion;
pub use route::{RouteMatch, RouteSpec};
pub use spec::{
    AdminState, Algorithm, BackendProtocol, BackendSpec, BackendTls, CertificateFile, ClusterSpec, Config,
    HashKey, HttpLimits, LinkSecurity, ListenerSpec, MembershipSpec, NodeSpec, Placement, PoolSpec, Protocol,
    RaftTiming, Role, TlsFiles, VipOnQuorumLoss, VipSpec,
};
pub use state::ClusterState;
pub use sticky::{StickyChange, StickyContract, StickyKey, StickyKind, StickyPolicy, StickySecret};
pub use sticky_table::{Session, StickyTables, TableStats};
pub use validate::Invalid;

/// Parses and validates a configuration file's text. `file` is how errors name
/// the file (usually the path the operator gave).
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    file::parse(file, text)
}
