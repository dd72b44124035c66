//! Header rewriting between client and backend: hop-by-hop headers removed
//! (RFC 9110 §7.6.1, including those named by `Connection`), and the client's
//! address and scheme added as `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `Forwarded` (RFC 7239), appending to what earlier proxies wrote.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::{IpAddr, SocketAddr};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the obsolete ones still seen).
static HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, and those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names settles it.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(&name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The forwarding headers for one client connection, rendered once when the
/// connection is accepted rather than on each of its requests.
#[derive(Debug)]
pub struct Forwarding {
    proto: HeaderValue,
    /// The client's address alone, and as `for=…;proto=…`.
    x_forwarded_for: HeaderValue,
    forwarded: HeaderValue,
}

impl Forwarding {
    pub fn new(client: SocketAddr, proto: &'static str) -> Self {
        let ip = client.ip();
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let render = |text: String| {
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        };
        Forwarding {
            proto: HeaderValue::from_static(proto),
            x_forwarded_for: render(ip.to_string()),
            forwarded: render(format!("for={node};proto={proto}")),
        }
    }

    /// Appends the client to `X-Forwarded-For` and `Forwarded` (after what
    /// earlier proxies wrote) and sets `X-Forwarded-Proto`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        append_list(headers, &X_FORWARDED_FOR, &self.x_forwarded_for);
        headers.insert(&X_FORWARDED_PROTO, self.proto.clone());
        append_list(headers, &header::FORWARDED, &self.forwarded);
    }
}

/// Appends `value` to a comma-separated header, creating it if absent.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let combined = match headers.get(name).map(HeaderValue::as_bytes) {
        Some(existing) if !existing.is_empty() => [existing, b", ", value.as_bytes()].concat(),
        _ => {
            headers.insert(name, value.clone());
            return;
        }
    };
    if let Ok(v) = HeaderValue::from_bytes(&combined) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn appends_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        Forwarding::new("[::1]:5000".parse().unwrap(), "http").apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=http");
    }
}
