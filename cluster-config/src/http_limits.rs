//! What an HTTP listener allows its clients: head and body sizes, the
//! deadlines a slow client meets (head, body, writes to it, idle), how many
//! backends one HTTP/2 connection may keep busy, and the listener's HTTP
//! options. Each has its default here, next to its field.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Limits an HTTP listener enforces on clients, each with a sane default.
///
/// Slow clients meet three clocks: a request head must arrive whole within
/// `header_read_timeout` of its first byte, however it trickles; a request
/// body must keep a pace (`body_timeout`, `body_min_rate`); and a write to
/// the client must progress within `send_timeout`. Each expiry is counted in
/// `/metrics` (`raftlb_client_refusals_total`, reasons `header_timeout`,
/// `body_timeout`, `body_rate`, `send_timeout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpLimits {
    /// Time allowed to receive a request's head (slowloris guard; HTTP/2:
    /// a header block, or any frame's 9-byte header): a total from the
    /// connection's start (its TLS handshake included) for its first
    /// request, and from the head's first byte after that, however slowly
    /// the bytes come. An HTTP/1 head that began while the response before
    /// it was still going out is judged when that response ends. Expiry
    /// closes the connection.
    pub header_read_timeout: Duration,
    /// How long a connection may sit idle (no request in flight, no head
    /// arriving) after a response (HTTP/2: with no open stream) before it is
    /// closed (HTTP/2: GOAWAY, and closed when the client acknowledges it,
    /// or `header_read_timeout` later). nginx's `keepalive_timeout`.
    pub keepalive_timeout: Duration,
    /// Largest request head (request line and headers) in bytes → 431
    /// (HTTP/2: the header list size announced and enforced, → 431).
    pub max_header_bytes: usize,
    /// Most request headers → 431.
    pub max_headers: usize,
    /// Largest request body in bytes → 413 (announced by `Content-Length`:
    /// refused before any backend sees it; chunked: cut off when it
    /// exceeds, and answered 413).
    pub max_body_bytes: u64,
    /// A request body falls behind, and is answered 408 with the connection
    /// closed, at the earlier of two deadlines: `body_timeout` after its
    /// last piece arrived (a stall; nginx's `client_body_timeout`), and
    /// `body_timeout + received / body_min_rate` after the body started (a
    /// trickle: `received` bytes buy a second per `body_min_rate`, as
    /// Apache's `mod_reqtimeout` `MinRate`). A client stalling or trickling
    /// a body would hold a backend connection.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average after its first
    /// `body_timeout` (see there); `0` turns the rate off.
    pub body_min_rate: u32,
    /// A write to the client (HTTP/1 or HTTP/2, TLS or not) that makes no
    /// progress for this long closes the connection: a client that stops
    /// reading cannot hold a response, and its backend, forever. nginx's
    /// `send_timeout`.
    pub send_timeout: Duration,
    /// HTTP/2: requests (streams) of one client connection forwarded to
    /// backends at once, each holding a backend connection (or stream)
    /// until its response ends. More wait for one to end, up to the pool's
    /// `response_timeout`, then get 503. (HTTP/1 has one at a time.)
    pub max_backend_streams: u32,
    /// An upgraded connection (WebSocket) silent both ways this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// The `Upgrade` protocols passed on to backends, lowercase
    /// (`websocket` by default); a request asking for any other is served
    /// as a plain request, its `Upgrade` and `Connection: upgrade` removed.
    pub upgrades: Vec<String>,
    /// `https`: the certificate for clients whose SNI names no certificate
    /// (or who send none); without it, the first certificate by name.
    pub default_certificate: Option<String>,
    /// `http`: answer every request with a 301 to the same URL over https.
    pub redirect_https: bool,
    /// Log one line per request.
    pub access_log: bool,
    /// Peers (the client as a PROXY header names it, else the socket's
    /// peer) whose `X-Forwarded-For`, `Forwarded` and `X-Forwarded-Proto`
    /// are kept, the client appended; any other peer's are replaced by
    /// the client alone (`Some(vec![])`: always replaced). `None` (the
    /// default): every peer's are kept, as nginx's `proxy_add_x_forwarded_for`
    /// and HAProxy's `option forwardfor` do. Format 3.
    #[serde(with = "crate::format::since_v3")]
    pub trusted_proxies: Option<Vec<crate::acl::Cidr>>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 100 * 1024 * 1024,
            body_timeout: Duration::from_secs(60),
            body_min_rate: 1024,
            send_timeout: Duration::from_secs(60),
            max_backend_streams: 32,
            tunnel_idle_timeout: Duration::from_secs(300),
            upgrades: vec!["websocket".to_string()],
            default_certificate: None,
            redirect_https: false,
            access_log: true,
            trusted_proxies: None,
        }
    }
}

impl HttpLimits {
    /// hyper cannot buffer less than this, so a smaller limit is refused.
    pub const MIN_HEADER_BYTES: usize = crate::limits::MIN_HEADER_BYTES;
}
