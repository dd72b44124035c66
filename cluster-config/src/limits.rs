//! Every numeric bound of the model, in one place: the file parser and the
//! typed validation ([`validate`](crate::validate)) both read these, so a
//! value the file refuses is refused through the admin API too. Bounds on
//! counts keep one log entry's cost (memory, apply time) and the node's
//! tables (Maglev keeps 100 slots per backend) within reason.

use std::time::Duration;

/// Names (listeners, pools, certificates, the cluster id) are
/// `[A-Za-z0-9_.-]{1,64}`.
pub const MAX_NAME_LEN: usize = 64;

/// The longest any duration may be: a year. Far below what
/// `Instant::now() + d` or a timer can hold (centuries), so no node
/// arithmetic on a configured duration can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `Batch` and `Independent` nest at most this deep:
/// `Independent([Batch([AddBackend …])])` is the deepest form.
pub const MAX_NESTING: usize = 2;
/// Commands in one log entry, nested ones included: room for 100 000
/// backends added in one `ctl apply`, while one entry (about 480 bytes per
/// decoded command) stays under ~130 MB however it was encoded.
pub const MAX_BATCH_COMMANDS: usize = 1 << 18;

/// Listeners in the cluster (each binds a socket on every balancer).
pub const MAX_LISTENERS: usize = 1024;
/// Pools in the cluster.
pub const MAX_POOLS: usize = 4096;
/// Backends in one pool.
pub const MAX_BACKENDS_PER_POOL: usize = 1 << 17;
/// Backends over all pools.
pub const MAX_BACKENDS: usize = 1 << 20;
/// Content-routing rules of one listener.
pub const MAX_ROUTES: usize = 1024;
/// Entries of one route's lists (methods, headers, cookies, header changes).
pub const MAX_ROUTE_LIST: usize = 64;
/// Certificates in the cluster.
pub const MAX_CERTIFICATES: usize = 4096;
/// Spread VIPs the cluster assigns.
pub const MAX_SPREAD_VIPS: usize = 4096;

/// Free text that ends up in a request, a header or a path (route values,
/// probe fields, cookie path, TLS server name, CA path).
pub const MAX_TEXT_BYTES: usize = 4096;
/// A route's `path_regex`, as written.
pub const MAX_REGEX_BYTES: usize = 1024;
/// A route's `path_regex`, compiled (the regex crate's own default is
/// 10 MiB): `^/api/v[0-9]+/[^/]+$` takes 2 KiB, Unicode `\w+` 50 KiB,
/// `\w{10}` 500 KiB (refused).
pub const MAX_REGEX_COMPILED_BYTES: usize = 256 * 1024;
/// Route regexes one log entry may carry: validating an entry compiles
/// each, so this bounds how long applying one can take (about a
/// millisecond each at the size limit).
pub const MAX_ENTRY_REGEXES: usize = 4096;
/// Each of a certificate's PEM texts (chain, key).
pub const MAX_PEM_BYTES: usize = 1 << 20;

/// A backend's (or pool's) `max_connections`.
pub const MAX_BACKEND_CONNECTIONS: u32 = 1 << 20;
/// A pool's `max_queue`: waiting work costs a task and its request each.
pub const MAX_QUEUE: u32 = 1 << 16;

/// Node ids are 1 to this (positive as an `i64`, for tools that read them so).
pub const MAX_NODE_ID: u64 = u64::MAX >> 1;

/// Listener connections (or UDP sessions) served at once.
pub const MAX_CONNECTIONS: u32 = 1_000_000;
/// Per-source rates and bursts (`[listener.limits]`), per second.
pub const MAX_RATE: u32 = 10_000_000;
/// ACL rules of one listener, and of one `ctl acl` change.
pub const MAX_ACL_RULES: usize = 1 << 18;
/// `Upgrade` protocols a listener passes on.
pub const MAX_UPGRADES: usize = 16;
/// hyper cannot buffer less than this, so a smaller head limit is refused.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_HEADER_BYTES: usize = 1 << 20;
pub const MAX_HEADERS: usize = 1000;
pub const MAX_BODY_BYTES: u64 = 1 << 40;
/// A request body's `body_min_rate`, bytes per second (1 GiB/s).
pub const MAX_BODY_MIN_RATE: u32 = 1 << 30;
/// HTTP/2 streams a client connection may have open at once (HAProxy's and
/// Envoy's default), and so the most `max_backend_streams` can mean.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// A backend's weight is 1 to this.
pub const MAX_WEIGHT: u32 = 1000;
pub const MAX_CONNECT_ATTEMPTS: u32 = 16;

/// Percentages (panic threshold, ejection share, retry budget).
pub const MAX_PERCENT: u32 = 100;
/// Health checks' `rise` and `fall`.
pub const MAX_RISE_FALL: u32 = 100;
pub const MAX_CONSECUTIVE_FAILURES: u32 = 1000;
pub const MAX_RETRY_ATTEMPTS: u32 = 5;
pub const MAX_RETRIES_PER_SECOND: u32 = 10_000;
/// HTTP statuses a probe may expect.
pub const STATUS_RANGE: (u16, u16) = (100, 599);

/// The shortest sticky-session ttl.
pub const MIN_STICKY_TTL: Duration = Duration::from_secs(1);
/// A sticky table's `max_entries` is 1 to this (64 Mi sessions).
pub const MAX_STICKY_ENTRIES: u64 = 1 << 26;
/// A sticky policy's `learn_rate` (new sessions per second and node) and
/// `learn_burst` are 1 to this.
pub const MAX_LEARN_RATE: u32 = 1_000_000;
