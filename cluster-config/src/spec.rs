//! The typed model: what a node needs to forward traffic. [`ClusterSpec`] is
//! the part every node shares (and, with the control plane, replicates);
//! [`NodeSpec`] is this node's own settings. Defaults live here, next to the
//! fields they fill, so the file reference and the code cannot drift apart.

use crate::access_log::AccessLogSpec;
use crate::acl::AclRule;
use crate::backend_limits::ConnectionLimits;
use crate::client_limits::ClientLimits;
use crate::health::PoolHealth;
pub use crate::http_limits::HttpLimits;
pub use crate::membership::{LinkSecurity, MembershipSpec, RaftTiming, TlsFiles, VipOnQuorumLoss};
use crate::route::RouteSpec;
use crate::sticky::StickyPolicy;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A whole validated configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub node: NodeSpec,
    /// How this node joins its cluster (`[cluster]`).
    pub membership: MembershipSpec,
    /// The listeners and pools the file declares: the seed of a new cluster,
    /// and what `raftlb ctl diff/apply` compare the cluster with.
    pub cluster: ClusterSpec,
    /// The virtual addresses this node may own (`[[vip]]`).
    pub vips: Vec<VipSpec>,
    /// `[[certificate]]`: PEM files the node stores in the cluster at start
    /// (under their name, unless the cluster already has that name).
    pub certificate_files: Vec<CertificateFile>,
}

/// One `[[certificate]]`: a name and the paths of its PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFile {
    pub name: String,
    /// The certificate chain, leaf first.
    pub cert: String,
    pub key: String,
}

/// A virtual IP (`[[vip]]`): owned by one node at a time, fenced by a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSpec {
    /// IPv4 (announced by gratuitous ARP) or IPv6 (by unsolicited
    /// neighbour advertisement).
    pub address: IpAddr,
    /// The subnet's prefix length (≤ 32 for IPv4, ≤ 128 for IPv6), as the
    /// address is added to `interface`.
    pub prefix_len: u8,
    /// The interface on the VIP's subnet (on this node; names may differ
    /// from node to node).
    pub interface: String,
    pub placement: Placement,
}

/// Which node owns a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// The Raft leader, while it holds its lease.
    Leader,
    /// One balancer per VIP, chosen by the leader (replicated), while the
    /// leader grants it a lease: several VIPs spread over the balancers.
    Spread,
}

/// This node's own settings (`[node]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Node id, unique in the cluster, ≥ 1.
    pub id: u64,
    pub role: Role,
    /// Where the node keeps its state.
    pub data_dir: String,
    /// How long a stopping node lets in-flight requests and connections finish.
    pub drain_timeout: Duration,
    /// Replaces the wildcard address (`0.0.0.0`, `::`) of every listener's
    /// bind on this node, so nodes sharing a host (demo, tests) can each serve
    /// the same replicated listener on their own address.
    pub bind_ip: Option<IpAddr>,
    /// Where to serve Prometheus `/metrics` and `/healthz`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// A file holding the bearer token that opens the status page's
    /// `/api/*` to non-loopback clients on the metrics address; `None`:
    /// loopback only.
    pub status_token_file: Option<String>,
    /// `[node] access_log`: where and how this node writes one line per
    /// request and L4 connection; `None`: request lines go to the ordinary
    /// log (`raftlb::access`).
    pub access_log: Option<AccessLogSpec>,
}

/// What a node does besides Raft (`[node] role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Serves the listeners and may own VIPs.
    Balancer,
    /// Votes and stores the log, never stands for leader, serves no traffic
    /// and owns no VIP: the third vote of a two-balancer pair.
    Witness,
}

impl NodeSpec {
    /// Where this node binds `listener`: its bind, with the wildcard address
    /// replaced by [`bind_ip`](Self::bind_ip) when one is set.
    pub fn local_bind(&self, bind: SocketAddr) -> SocketAddr {
        match self.bind_ip {
            Some(ip) if bind.ip().is_unspecified() => SocketAddr::new(ip, bind.port()),
            _ => bind,
        }
    }
}

impl NodeSpec {
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
}

/// The shared part: listeners and the pools they send to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub listeners: Vec<ListenerSpec>,
    pub pools: Vec<PoolSpec>,
    /// `[gslb]`: the names this cluster answers DNS for. Format 6.
    #[serde(with = "crate::format::since_v6")]
    pub gslb: Option<Box<crate::gslb::GslbSpec>>,
}

impl ClusterSpec {
    /// The oldest format that can carry this spec (see [`format`](crate::format)).
    pub fn format_needed(&self) -> u16 {
        let listeners = self.listeners.iter().map(ListenerSpec::format_needed);
        let pools = self.pools.iter().map(PoolSpec::format_needed);
        let gslb = self.gslb.as_ref().map(|_| crate::gslb::GslbSpec::FORMAT);
        listeners.chain(pools).chain(gslb).max().unwrap_or(1)
    }

    /// The pool with this name.
    pub fn pool(&self, name: &str) -> Option<&PoolSpec> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Total backends over all pools.
    pub fn backend_count(&self) -> usize {
        self.pools.iter().map(|p| p.backends.len()).sum()
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 and cleartext HTTP/2 (prior knowledge), proxied at L7.
    Http,
    /// HTTP over TLS (certificates chosen by SNI, HTTP/2 by ALPN), proxied at L7.
    Https,
    /// TCP, spliced at L4.
    Tcp,
    /// UDP datagrams, relayed per client session at L4.
    Udp,
}

impl Protocol {
    pub const ALL: [(&'static str, Protocol); 4] = [
        ("http", Protocol::Http),
        ("https", Protocol::Https),
        ("tcp", Protocol::Tcp),
        ("udp", Protocol::Udp),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// True when the listener binds a TCP socket (HTTP and TCP share the port space).
    pub fn is_stream(self) -> bool {
        !matches!(self, Protocol::Udp)
    }

    /// True when the listener speaks HTTP (in the clear or over TLS).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

/// Whether two listeners' sockets would collide: same transport (HTTP and
/// TCP share TCP's), same port, and the same IP or a wildcard of the family.
pub fn binds_overlap(a: (Protocol, SocketAddr), b: (Protocol, SocketAddr)) -> bool {
    let ((pa, a), (pb, b)) = (a, b);
    pa.is_stream() == pb.is_stream()
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSpec {
    pub name: String,
    pub protocol: Protocol,
    pub bind: SocketAddr,
    /// Where traffic goes when no route takes it; `None` (HTTP with routes
    /// only): such requests get 404.
    pub pool: Option<String>,
    /// HTTP only: ordered content-routing rules (`[[listener.route]]`).
    pub routes: Vec<RouteSpec>,
    /// Connections (TCP, HTTP) or sessions (UDP) served at once; more wait in the backlog.
    pub max_connections: u32,
    /// TCP: a spliced connection idle this long in both directions is closed.
    /// UDP: a client session with no datagram either way this long is forgotten.
    /// HTTP listeners use [`HttpLimits::keepalive_timeout`] instead.
    pub idle_timeout: Duration,
    /// HTTP only.
    pub http: HttpLimits,
    /// `[listener.limits]`: what one source may do here (every protocol).
    pub limits: ClientLimits,
    /// `[[listener.acl]]`: sources allowed or denied, checked at accept;
    /// sorted by network, each network once ([`acl`](crate::acl)).
    pub acl: Vec<AclRule>,
    /// `accept_proxy` (TCP, HTTP, HTTPS): when not empty, every connection
    /// must come from one of these networks and start with a PROXY header
    /// (v1 or v2), whose source is then the client's address. Format 3.
    #[serde(with = "crate::format::since_v3")]
    pub proxy_trusted: Vec<crate::acl::Cidr>,
    /// HTTP/3 (`https`) or routing by QUIC connection ID (`udp`). Format 5.
    #[serde(with = "crate::format::since_v5")]
    pub quic: crate::quic::QuicSpec,
}

impl ListenerSpec {
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

    /// Whether connections must start with a PROXY header.
    pub fn accepts_proxy(&self) -> bool {
        !self.proxy_trusted.is_empty()
    }

    /// The oldest format that can carry this listener (see [`format`](crate::format)).
    pub fn format_needed(&self) -> u16 {
        if !self.quic.is_default() {
            return 5;
        }
        match self.accepts_proxy() || self.http.trusted_proxies.is_some() {
            true => 3,
            false => 1,
        }
    }

    /// The UDP address HTTP/3 is served on, when it is.
    pub fn http3_bind(&self) -> Option<SocketAddr> {
        self.quic.http3.then(|| self.quic.http3_bind.unwrap_or(self.bind))
    }

    /// Every socket address the listener binds, with the protocol whose
    /// transport it takes (HTTP/3's UDP as `Udp`).
    pub fn binds(&self) -> impl Iterator<Item = (Protocol, SocketAddr)> {
        std::iter::once((self.protocol, self.bind)).chain(self.http3_bind().map(|b| (Protocol::Udp, b)))
    }

    /// Whether some socket of this listener would collide with one of `other`'s.
    pub fn overlaps(&self, other: &ListenerSpec) -> bool {
        self.binds().any(|a| other.binds().any(|b| binds_overlap(a, b)))
    }

    /// `name (protocol bind → pool, N routes)`, as commands print it.
    pub fn summary(&self) -> String {
        let pool = self.pool.as_deref().unwrap_or("404");
        let routes = match self.routes.len() {
            0 => String::new(),
            1 => ", 1 route".to_string(),
            n => format!(", {n} routes"),
        };
        format!(
            "{} ({} {} → pool {pool}{routes})",
            self.name,
            self.protocol.name(),
            self.bind
        )
    }

    /// Every pool the listener sends to: its own and its routes'.
    pub fn pools(&self) -> impl Iterator<Item = &str> {
        self.pool
            .as_deref()
            .into_iter()
            .chain(self.routes.iter().map(|r| r.pool.as_str()))
    }
    pub fn default_idle_timeout(protocol: Protocol) -> Duration {
        match protocol {
            Protocol::Http | Protocol::Https => HttpLimits::default().keepalive_timeout,
            Protocol::Tcp => Duration::from_secs(300),
            Protocol::Udp => Duration::from_secs(30),
        }
    }
}

/// How a pool picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    /// Rendezvous hashing of the client's source IP: a client stays on its
    /// backend while the backend set is unchanged.
    IpHash,
    /// Google's Maglev consistent hashing of the pool's [`HashKey`].
    Maglev,
    /// Power of two choices on in-flight requests per unit of weight.
    RandomTwo,
    /// Power of two choices on peak-EWMA latency × (in-flight + 1).
    PeakEwma,
}

impl Algorithm {
    pub const ALL: [(&'static str, Algorithm); 7] = [
        ("round_robin", Algorithm::RoundRobin),
        ("weighted_round_robin", Algorithm::WeightedRoundRobin),
        ("least_connections", Algorithm::LeastConnections),
        ("ip_hash", Algorithm::IpHash),
        ("maglev", Algorithm::Maglev),
        ("random_two", Algorithm::RandomTwo),
        ("peak_ewma", Algorithm::PeakEwma),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::IpHash => "ip_hash",
            Algorithm::Maglev => "maglev",
            Algorithm::RandomTwo => "random_two",
            Algorithm::PeakEwma => "peak_ewma",
        }
    }

    /// True when backend weights change what the algorithm picks.
    pub fn uses_weight(self) -> bool {
        !matches!(self, Algorithm::RoundRobin)
    }

    /// True for the algorithms that hash a key to a backend (slow start
    /// leaves their keys where they are).
    pub fn is_hash(self) -> bool {
        matches!(self, Algorithm::IpHash | Algorithm::Maglev)
    }

    /// The key a hashing algorithm hashes, or `None` when it hashes none:
    /// `ip_hash` always the source IP, `maglev` the pool's `hash_key`.
    pub fn hash_key(self, configured: &HashKey) -> Option<&HashKey> {
        match self {
            Algorithm::IpHash => Some(&HashKey::SourceIp),
            Algorithm::Maglev => Some(configured),
            _ => None,
        }
    }
}

/// `hash_key`: what a `maglev` pool hashes to choose a backend. A request
/// without the header or cookie is hashed by its source IP; L4 listeners
/// (TCP, UDP) only have the source IP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HashKey {
    /// The client's IP address (`source_ip`, the default).
    #[default]
    SourceIp,
    /// A request header's value (`header:NAME`).
    Header(String),
    /// A request cookie's value (`cookie:NAME`).
    Cookie(String),
    /// The request's path, without the query (`path`).
    Path,
}

impl HashKey {
    /// True when only an HTTP listener can see the key.
    pub fn needs_http(&self) -> bool {
        !matches!(self, HashKey::SourceIp)
    }
}

impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::SourceIp => f.write_str("source_ip"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::Path => f.write_str("path"),
        }
    }
}

/// One `[[pool]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub name: String,
    pub algorithm: Algorithm,
    /// What `maglev` hashes (the other algorithms ignore it).
    pub hash_key: HashKey,
    pub backends: Vec<BackendSpec>,
    /// Time allowed to open a connection to one backend before trying the next.
    pub connect_timeout: Duration,
    /// HTTP: time allowed for a backend's response headers → 504.
    pub response_timeout: Duration,
    /// Backends tried for one connection or request when connecting fails.
    pub max_connect_attempts: u32,
    /// `[pool.sticky]`: how clients are kept on one backend, if at all.
    pub sticky: Option<StickyPolicy>,
    /// `[pool.tls]`: HTTP to the backends over TLS, if set.
    pub tls: Option<BackendTls>,
    /// What HTTP listeners speak to the backends.
    pub backend_protocol: BackendProtocol,
    /// Health checks, outlier ejection, panic threshold, slow start, retries.
    pub health: PoolHealth,
    /// `max_connections` per backend, `max_queue`, `queue_timeout`.
    pub limits: ConnectionLimits,
    /// The PROXY protocol header each backend connection starts with (TCP
    /// and HTTP, before any TLS), naming the client; `None`: no header.
    /// Format 3.
    #[serde(with = "crate::format::since_v3")]
    pub proxy_protocol: Option<crate::proxy::ProxyVersion>,
    /// `discovery = { … }`: more backends, the answers of a DNS name
    /// ([`discovery`](crate::discovery)). Format 6.
    #[serde(with = "crate::format::since_v6")]
    pub discovery: Option<crate::discovery::DiscoverySpec>,
    /// What the cluster last committed about the discovery's answers; set
    /// by [`Command::SetDiscovered`](crate::Command::SetDiscovered) only
    /// (a pool from a file or `ctl` keeps the cluster's). Format 6.
    #[serde(with = "crate::format::since_v6")]
    pub discovery_status: crate::discovery::DiscoveryStatus,
}

/// HTTP version towards a pool's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendProtocol {
    /// HTTP/1.1 with keep-alive (the default).
    #[default]
    Http1,
    /// HTTP/2: prior knowledge in the clear, ALPN `h2` over TLS; requests
    /// are multiplexed on one connection per backend and worker.
    H2,
}

impl BackendProtocol {
    pub const ALL: [(&'static str, BackendProtocol); 2] =
        [("http1", BackendProtocol::Http1), ("h2", BackendProtocol::H2)];
}

/// TLS from the balancer to a pool's backends (`[pool.tls]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendTls {
    /// The name the backends' certificates must carry, sent as SNI; without
    /// it, each backend's IP address.
    pub server_name: Option<String>,
    /// PEM file of the CAs that sign the backends' certificates (a path on
    /// each node).
    pub ca_file: Option<String>,
    /// Accept any certificate: encryption without authentication.
    pub insecure: bool,
}

impl PoolSpec {
    /// The oldest format that can carry this pool (see [`format`](crate::format)).
    pub fn format_needed(&self) -> u16 {
        if self.discovery.is_some()
            || self.discovery_status != crate::discovery::DiscoveryStatus::default()
            || self.backends.iter().any(|b| b.discovered)
        {
            return 6;
        }
        match self.proxy_protocol {
            Some(_) => 3,
            None => 1,
        }
    }

    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_MAX_CONNECT_ATTEMPTS: u32 = 3;
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    pub address: SocketAddr,
    /// Relative share of traffic, 1..=[`BackendSpec::MAX_WEIGHT`].
    pub weight: u32,
    /// Whether the backend takes new work.
    pub state: AdminState,
    /// Its own `max_connections`, instead of the pool's.
    pub max_connections: Option<u32>,
    /// Put in the pool by DNS discovery, not by the operator. Discovered and
    /// static backends share the pool's one list, so balancing, health
    /// checks, slow start, sticky sessions and `ctl` treat them alike; this
    /// flag is what keeps them apart where it matters: a discovery answer
    /// replaces only the discovered ones, and `ctl apply` of a file (or an
    /// `UpdatePool`) leaves them as the cluster has them. Format 6.
    #[serde(with = "crate::format::since_v6")]
    pub discovered: bool,
}

impl BackendSpec {
    pub const DEFAULT_WEIGHT: u32 = 1;
    pub const MAX_WEIGHT: u32 = crate::limits::MAX_WEIGHT;

    /// An enabled backend with the default weight.
    pub fn new(address: SocketAddr) -> Self {
        BackendSpec {
            address,
            weight: Self::DEFAULT_WEIGHT,
            state: AdminState::Enabled,
            max_connections: None,
            discovered: false,
        }
    }
}

/// What an operator has said about a backend, HAProxy's `ready | drain | maint`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdminState {
    /// Takes new connections and requests.
    #[default]
    Enabled,
    /// Takes nothing new; connections and requests in flight finish (and,
    /// with sticky sessions, existing sessions keep it until they expire).
    Drain,
    /// Takes nothing at all, sticky sessions included.
    Maintenance,
}

impl AdminState {
    pub const ALL: [(&'static str, AdminState); 3] = [
        ("enabled", AdminState::Enabled),
        ("drain", AdminState::Drain),
        ("maintenance", AdminState::Maintenance),
    ];

    pub fn name(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Drain => "drain",
            AdminState::Maintenance => "maintenance",
        }
    }
}
