//! Header rewriting between client and backend: hop-by-hop headers removed
//! (RFC 9110 §7.6.1, including those named by `Connection`), and the client's
//! address and scheme added as `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `Forwarded` (RFC 7239): appended to what earlier proxies wrote, or, with
//! `trusted_proxies`, appended only for a trusted peer and otherwise
//! replacing what the peer claims ([`Claims`]).

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use std::net::{IpAddr, SocketAddr};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the obsolete ones still seen),
/// `Connection` first ([`remove_hop_by_hop`] relies on it).
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
///
/// One pass over the names finds the hop-by-hop ones present, and only
/// those are removed: a keep-alive backend puts `Connection` on every
/// response, and removing all eight names (a hash and a probe each) and
/// parsing `keep-alive` into a new name cost as much as all the rest of a
/// request's header handling.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Bit i: HOP_BY_HOP[i] is present.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        remove_connection_options(headers);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// The index of `name` in [`HOP_BY_HOP`], if it is there: one match on the
/// (lower-case) text instead of eight comparisons of names.
fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    let index = match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "proxy-authorization" => 7,
        _ => return None,
    };
    debug_assert!(HOP_BY_HOP[index] == name);
    Some(index)
}

/// Removes the headers `Connection` names. The values are cloned (a
/// reference count, no copy) so that the names can be looked up as they
/// are, with no new `HeaderName`s.
fn remove_connection_options(headers: &mut HeaderMap) {
    debug_assert!(*HOP_BY_HOP[0] == header::CONNECTION);
    let mut values = headers.get_all(header::CONNECTION).iter().cloned();
    let first = values.next();
    // More than one `Connection` line is rare: no allocation otherwise.
    let rest: Vec<HeaderValue> = values.collect();
    for value in first.iter().chain(&rest) {
        // What a keep-alive backend sends with every response: it names
        // only a hop-by-hop header, removed anyway.
        if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
            continue;
        }
        let Ok(list) = value.to_str() else { continue };
        for option in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            // Not a valid name: nothing to remove.
            headers.remove(option);
        }
    }
}

/// Whether a `Connection` header lists `option` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, option: &str) -> bool {
    list_items(headers, header::CONNECTION).any(|token| token.eq_ignore_ascii_case(option.as_bytes()))
}

/// The items of a list-valued header (RFC 9110 §5.6.1) over all its
/// fields, in order, trimmed, empty ones skipped.
pub fn list_items(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// What becomes of the forwarding headers a request arrives with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claims {
    /// Kept, the client appended; `X-Forwarded-Proto` set to ours (no
    /// `trusted_proxies`: every peer is believed, as before the setting).
    Append,
    /// Kept, the client appended, an `X-Forwarded-Proto` kept: the peer
    /// is in `trusted_proxies`.
    Trust,
    /// Removed, the client's alone written: the peer is not in `trusted_proxies`.
    Replace,
}

impl Claims {
    /// How a listener with `trusted_proxies` treats `peer`'s headers.
    pub fn of(trusted_proxies: Option<&[raftlb_config::Cidr]>, peer: IpAddr) -> Claims {
        match trusted_proxies {
            None => Claims::Append,
            Some(networks) if raftlb_config::proxy::trusted(networks, peer) => Claims::Trust,
            Some(_) => Claims::Replace,
        }
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
    incoming: Claims,
}

impl Forwarding {
    pub fn new(client: SocketAddr, proto: &'static str, incoming: Claims) -> Self {
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
            incoming,
        }
    }

    /// Adds the client to `X-Forwarded-For` and `Forwarded` and sets
    /// `X-Forwarded-Proto`, keeping or replacing what the request brought
    /// as [`Claims`] says.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self.incoming {
            Claims::Replace => {
                headers.insert(&X_FORWARDED_FOR, self.x_forwarded_for.clone());
                headers.insert(&X_FORWARDED_PROTO, self.proto.clone());
                headers.insert(header::FORWARDED, self.forwarded.clone());
            }
            Claims::Append | Claims::Trust => {
                append_list(headers, &X_FORWARDED_FOR, &self.x_forwarded_for);
                append_list(headers, &header::FORWARDED, &self.forwarded);
                match headers.entry(&X_FORWARDED_PROTO) {
                    Entry::Occupied(_) if self.incoming == Claims::Trust => {}
                    Entry::Occupied(mut entry) => {
                        entry.insert(self.proto.clone());
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(self.proto.clone());
                    }
                }
            }
        }
    }
}

/// Appends `value` to a comma-separated header, creating it if absent (one
/// lookup either way); several lines of it become one list, in order.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    match headers.entry(name) {
        Entry::Occupied(mut entry) if !entry.get().is_empty() => {
            let mut combined = Vec::new();
            for line in entry.iter().filter(|line| !line.is_empty()) {
                combined.extend_from_slice(line.as_bytes());
                combined.extend_from_slice(b", ");
            }
            combined.extend_from_slice(value.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&combined) {
                entry.insert(v);
            }
        }
        Entry::Occupied(mut entry) => {
            entry.insert(value.clone());
        }
        Entry::Vacant(entry) => {
            entry.insert(value.clone());
        }
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
    fn connection_may_name_hop_by_hop_headers_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive,TE, x-a"));
        h.append(header::CONNECTION, HeaderValue::from_static("X-B"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn every_hop_by_hop_name_is_found_at_its_index() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop(&header::HOST), None);
    }

    #[test]
    fn a_keep_alive_response_loses_connection_and_keep_alive_only() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.insert("x-connection", HeaderValue::from_static("keep-alive"));
        let before = h.clone();
        remove_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn appends_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        Forwarding::new("[::1]:5000".parse().unwrap(), "http", Claims::Append).apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=http");
    }

    fn claimed() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        h
    }

    #[test]
    fn a_trusted_peer_s_headers_are_kept_and_an_untrusted_one_s_replaced() {
        let trusted: Vec<raftlb_config::Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let from = |peer: &str| Claims::of(Some(&trusted), peer.parse().unwrap());
        assert_eq!(from("10.1.2.3"), Claims::Trust);
        assert_eq!(from("192.0.2.1"), Claims::Replace);
        assert_eq!(Claims::of(None, "192.0.2.1".parse().unwrap()), Claims::Append);

        let mut h = claimed();
        Forwarding::new("10.1.2.3:5000".parse().unwrap(), "http", Claims::Trust).apply(&mut h);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 7.7.7.7, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h[header::FORWARDED], "for=6.6.6.6, for=10.1.2.3;proto=http");

        let mut h = claimed();
        Forwarding::new("192.0.2.1:5000".parse().unwrap(), "http", Claims::Replace).apply(&mut h);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h[header::FORWARDED], "for=192.0.2.1;proto=http");
    }
}
