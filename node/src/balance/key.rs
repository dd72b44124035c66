//! The request's key hash for the hashing algorithms, by the pool's
//! `hash_key`: `ip_hash` always hashes the source IP; `maglev` hashes the
//! source IP, a header's or cookie's value, or the path, and the source IP
//! when the request lacks the header or cookie. L4 listeners (TCP, UDP)
//! have only the source IP. Other algorithms get no hash, at no cost.

use super::hash::{self, seed};
use crate::dataplane::l7::cookies::request_cookie;
use crate::view::PoolView;
use http::HeaderMap;
use raftlb_config::HashKey;
use std::net::IpAddr;

impl PoolView {
    /// The key hash of an L4 connection or UDP session from `client`.
    pub fn source_hash(&self, client: IpAddr) -> Option<u64> {
        self.spec
            .algorithm
            .hash_key(&self.spec.hash_key)
            .map(|_| hash::ip(seed::KEY, client))
    }

    /// The key hash of an HTTP request from `client` with `headers` for `path`.
    pub fn request_hash(&self, client: IpAddr, headers: &HeaderMap, path: &str) -> Option<u64> {
        let key = self.spec.algorithm.hash_key(&self.spec.hash_key)?;
        let bytes = match key {
            HashKey::SourceIp => None,
            HashKey::Header(name) => headers.get(name.as_str()).map(|v| v.as_bytes()),
            HashKey::Cookie(name) => request_cookie(headers, name),
            HashKey::Path => Some(path.as_bytes()),
        };
        Some(match bytes {
            Some(bytes) => hash::hash(seed::KEY, bytes),
            None => hash::ip(seed::KEY, client),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::view::{ClusterView, PoolView};
    use http::{HeaderMap, HeaderValue};
    use raftlb_config::{Algorithm, BackendSpec, ClusterSpec, ClusterState, Command, HashKey, PoolSpec};
    use std::net::IpAddr;
    use std::sync::Arc;

    fn pool(algorithm: Algorithm, hash_key: HashKey) -> Arc<PoolView> {
        let spec = PoolSpec {
            name: "p".to_string(),
            algorithm,
            hash_key,
            backends: vec![BackendSpec::new(([127, 0, 0, 1], 9000).into())],
            connect_timeout: PoolSpec::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: PoolSpec::DEFAULT_RESPONSE_TIMEOUT,
            max_connect_attempts: 1,
            sticky: None,
            tls: None,
            backend_protocol: Default::default(),
            health: Default::default(),
        };
        let mut state = ClusterState::default();
        state.apply(Command::Bootstrap(ClusterSpec {
            listeners: Vec::new(),
            pools: vec![spec],
        }));
        let view = ClusterView::build(&state, 0, None, None);
        Arc::clone(view.pool("p").expect("pool"))
    }

    const ALICE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const BOB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn only_hashing_algorithms_get_a_hash() {
        let none = HeaderMap::new();
        let rr = pool(Algorithm::RoundRobin, HashKey::SourceIp);
        assert_eq!(rr.request_hash(ALICE, &none, "/"), None);
        assert_eq!(rr.source_hash(ALICE), None);
        let ip_hash = pool(Algorithm::IpHash, HashKey::SourceIp);
        assert!(ip_hash.source_hash(ALICE).is_some());
        assert_ne!(ip_hash.source_hash(ALICE), ip_hash.source_hash(BOB));
        assert_eq!(
            ip_hash.request_hash(ALICE, &none, "/a"),
            ip_hash.source_hash(ALICE)
        );
    }

    #[test]
    fn maglev_hashes_its_key_and_falls_back_to_the_source() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("u1"));
        headers.insert("cookie", HeaderValue::from_static("a=1; sid=s1"));
        let by_header = pool(Algorithm::Maglev, HashKey::Header("X-User".to_string()));
        let h = by_header.request_hash(ALICE, &headers, "/");
        assert!(h.is_some());
        assert_eq!(
            h,
            by_header.request_hash(BOB, &headers, "/other"),
            "same user, any client"
        );
        assert_eq!(
            by_header.request_hash(ALICE, &HeaderMap::new(), "/"),
            by_header.source_hash(ALICE),
            "no header: the source IP"
        );
        let by_cookie = pool(Algorithm::Maglev, HashKey::Cookie("sid".to_string()));
        assert_eq!(
            by_cookie.request_hash(ALICE, &headers, "/"),
            by_cookie.request_hash(BOB, &headers, "/")
        );
        assert_ne!(by_cookie.request_hash(ALICE, &headers, "/"), h);
        let by_path = pool(Algorithm::Maglev, HashKey::Path);
        assert_eq!(
            by_path.request_hash(ALICE, &headers, "/a"),
            by_path.request_hash(BOB, &HeaderMap::new(), "/a")
        );
        assert_ne!(
            by_path.request_hash(ALICE, &headers, "/a"),
            by_path.request_hash(ALICE, &headers, "/b")
        );
    }
}
