//! [`Record`]: what one HTTP request or L4 connection did, built while it
//! is served and finished once when it ends (its response body sent or
//! dropped; its connection closed). Finishing feeds the traffic counters
//! of its listener and pool and, when the listener logs, the access log:
//! one value for both, so the log and `/metrics` always agree.

use crate::view::{ListenerView, PoolView};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Uri, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The request header carrying the request id to the backend.
pub const REQUEST_ID: &str = "x-request-id";
/// The longest client request id taken as it is.
const MAX_REQUEST_ID: usize = 128;

/// One finished (or finishing) request or L4 connection.
#[derive(Debug)]
pub struct Record {
    /// When it started (wall clock, for the log): stamped by
    /// [`finish`](Self::finish) as its end less its `total`, and only when
    /// it is logged, so that a request not logged reads the clock once
    /// fewer.
    pub time: SystemTime,
    started: Instant,
    pub client: SocketAddr,
    pub listener: Arc<ListenerView>,
    pub pool: Option<Arc<PoolView>>,
    /// The backend that answered (HTTP) or was connected (L4).
    pub backend: Option<SocketAddr>,
    /// HTTP only: the request as the client sent it.
    pub request: Option<HttpRequest>,
    /// HTTP only: the status sent to the client.
    pub status: Option<u16>,
    /// Bytes from the client: HTTP, the request body as declared or read
    /// whole (0 for a streamed chunked body); L4, all.
    pub received: u64,
    /// Bytes to the client: HTTP, the response body; L4, all.
    pub sent: u64,
    /// Getting a ready backend connection (a pooled one: about nothing).
    pub connect: Option<Duration>,
    /// HTTP: from sending the request to the backend's response headers.
    pub first_byte: Option<Duration>,
    /// Set by [`finish`](Self::finish): head read (L4: accept) to the end.
    pub total: Duration,
    pub tls: Option<TlsInfo>,
    pub sticky: StickyOutcome,
    /// Tries sent again to another backend.
    pub retries: u32,
}

/// What the access log keeps of an HTTP request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub id: HeaderValue,
    pub method: Method,
    pub target: Uri,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

/// The TLS a listener terminated for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: &'static str,
    pub sni: Option<Arc<str>>,
}

impl TlsInfo {
    /// What the client and the listener settled on.
    pub fn of(connection: &rustls::ServerConnection) -> TlsInfo {
        use rustls::ProtocolVersion;
        let version = match connection.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        TlsInfo {
            version,
            sni: connection.server_name().map(Arc::from),
        }
    }
}

/// How a sticky pool placed the request or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StickyOutcome {
    /// Not a sticky pool (or no backend reached).
    #[default]
    None,
    /// Sent to its session's backend.
    Hit,
    /// No session, or its backend could not take it: placed anew.
    Miss,
}

impl StickyOutcome {
    pub fn name(self) -> &'static str {
        match self {
            StickyOutcome::None => "none",
            StickyOutcome::Hit => "hit",
            StickyOutcome::Miss => "miss",
        }
    }

    /// A pool's outcome (`sticky`: it has a policy): `preferred`, the
    /// session's backend, against `backend`, the one reached.
    pub fn of(sticky: bool, preferred: Option<SocketAddr>, backend: SocketAddr) -> Self {
        match (sticky, preferred) {
            (false, _) => StickyOutcome::None,
            (true, Some(p)) if p == backend => StickyOutcome::Hit,
            (true, _) => StickyOutcome::Miss,
        }
    }
}

impl Record {
    /// The record of an HTTP request whose head was just read on
    /// `listener`. Its id is the client's `X-Request-Id` when that is a
    /// sane token, else a new one; either way the request carries it on
    /// to the backend.
    pub fn http<B>(
        listener: Arc<ListenerView>,
        client: SocketAddr,
        tls: Option<TlsInfo>,
        request: &mut http::Request<B>,
    ) -> Record {
        let id = request_id(request.headers_mut());
        let headers = request.headers();
        let http = HttpRequest {
            id,
            method: request.method().clone(),
            target: request.uri().clone(),
            version: request.version(),
            referer: headers.get(header::REFERER).cloned(),
            user_agent: headers.get(header::USER_AGENT).cloned(),
        };
        Record {
            request: Some(http),
            tls,
            ..Record::connection(listener, client)
        }
    }

    /// The record of an L4 connection just accepted.
    pub fn connection(listener: Arc<ListenerView>, client: SocketAddr) -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH,
            started: Instant::now(),
            client,
            listener,
            pool: None,
            backend: None,
            request: None,
            status: None,
            received: 0,
            sent: 0,
            connect: None,
            first_byte: None,
            total: Duration::ZERO,
            tls: None,
            sticky: StickyOutcome::None,
            retries: 0,
        }
    }

    /// The request or connection has ended: counts it and logs it.
    pub fn finish(mut self) {
        self.total = self.started.elapsed();
        if let Some(status) = self.status {
            self.listener.traffic.response(status, self.total);
            if let Some(pool) = &self.pool {
                pool.traffic.response(status);
            }
        }
        if self.listener.spec.http.access_log {
            let end = SystemTime::now();
            self.time = end.checked_sub(self.total).unwrap_or(end);
            super::log(self);
        }
    }
}

/// The request's id: the client's `X-Request-Id` if it sent one, a sane
/// token (1 to 128 of `A-Z a-z 0-9 - _ . : + / =`), else a new one,
/// which replaces whatever it sent.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    let mut given = headers.get_all(REQUEST_ID).iter();
    if let (Some(id), None) = (given.next(), given.next())
        && sane(id.as_bytes())
    {
        return id.clone();
    }
    let id = new_request_id();
    headers.insert(REQUEST_ID, id.clone());
    id
}

fn sane(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
}

/// 32 hex digits: a random per-thread prefix and the thread's counter, so
/// ids are unique across threads, nodes and restarts without a random draw
/// per request, and no counter is shared between the workers.
fn new_request_id() -> HeaderValue {
    use std::cell::Cell;
    thread_local! {
        static NEXT: Cell<(u64, u64)> = Cell::new((random_prefix(), 0));
    }
    let (prefix, n) = NEXT.get();
    NEXT.set((prefix, n.wrapping_add(1)));
    let mut text = [0u8; 32];
    hex(prefix, &mut text[..16]);
    hex(n, &mut text[16..]);
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `value` as 16 lower-case hex digits into `out`.
fn hex(value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[(value >> (60 - 4 * i) & 0xf) as usize];
    }
}

/// A thread's request-id prefix: random; without the OS's randomness, the
/// time, the pid and the thread still tell threads apart.
fn random_prefix() -> u64 {
    let mut bytes = [0; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    use std::hash::{BuildHasher, RandomState};
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let thread = RandomState::new().hash_one(std::thread::current().id());
    nanos ^ (u64::from(std::process::id()) << 32) ^ thread
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(request_id(&mut headers), "abc-123_x.y:z");
        for bad in ["", "a b", "a\"b", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&mut headers);
            assert_eq!(id.len(), 32, "{bad:?} replaced by a new id");
            assert_eq!(headers[REQUEST_ID], id, "and the backend gets it");
        }
        // Two ids: which would the backend believe? Neither.
        let mut headers = HeaderMap::new();
        headers.append(REQUEST_ID, HeaderValue::from_static("a"));
        headers.append(REQUEST_ID, HeaderValue::from_static("b"));
        let id = request_id(&mut headers);
        assert_eq!(headers.get_all(REQUEST_ID).iter().collect::<Vec<_>>(), [&id]);
        assert_ne!(request_id(&mut HeaderMap::new()), id, "new ids differ");
    }

    #[test]
    fn new_ids_are_hex_counted_per_thread_and_differ_between_threads() {
        let id = || new_request_id().to_str().unwrap().to_owned();
        let (a, b) = (id(), id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{id}"
            );
        }
        assert_eq!(a[..16], b[..16], "one thread, one prefix");
        let count = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert_eq!(count(&b), count(&a) + 1);
        let other = std::thread::spawn(id).join().unwrap();
        assert_ne!(other[..16], a[..16], "another thread, another prefix");
        let mut out = [0; 16];
        hex(0x0123_4567_89ab_cdef, &mut out);
        assert_eq!(&out, b"0123456789abcdef");
    }

    #[test]
    fn sticky_outcomes() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(StickyOutcome::of(false, Some(a), a), StickyOutcome::None);
        assert_eq!(StickyOutcome::of(true, Some(a), a), StickyOutcome::Hit);
        assert_eq!(StickyOutcome::of(true, Some(a), b), StickyOutcome::Miss);
        assert_eq!(StickyOutcome::of(true, None, b), StickyOutcome::Miss);
    }
}
