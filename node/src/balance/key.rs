//! The request's key hash for the hashing algorithms, by the pool's
//! `hash_key`: `ip_hash` always hashes the source IP; `maglev` hashes the
//! source IP, a header's or cookie's value, or the path, and the source IP
//! when the request lacks the header or cookie. L4 listeners (TCP, UDP)
//! have only the source IP. Other algorithms get no hash, at no cost.

use super::hash::{self, seed};
use crate::dataplane::l7::cookies::request_cookie;
use http::HeaderMap;
use raftlb_config::{HashKey, PoolSpec};
use std::net::IpAddr;

/// The key hash of an L4 connection or UDP session from `client` to `pool`.
pub fn source_hash(pool: &PoolSpec, client: IpAddr) -> Option<u64> {
    pool.algorithm
        .hash_key(&pool.hash_key)
        .map(|_| hash::ip(seed::KEY, client))
}

/// The key hash of an HTTP request to `pool` from `client` with `headers` for `path`.
pub fn request_hash(pool: &PoolSpec, client: IpAddr, headers: &HeaderMap, path: &str) -> Option<u64> {
    let key = pool.algorithm.hash_key(&pool.hash_key)?;
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

#[cfg(test)]
mod tests {
    use super::{request_hash, source_hash};
    use http::{HeaderMap, HeaderValue};
    use raftlb_config::{Algorithm, HashKey, PoolSpec};
    use std::net::IpAddr;

    fn pool(algorithm: Algorithm, hash_key: HashKey) -> PoolSpec {
        PoolSpec {
            algorithm,
            hash_key,
            ..crate::balance::test_pool(&[1])
        }
    }

    const ALICE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const BOB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn only_hashing_algorithms_get_a_hash() {
        let none = HeaderMap::new();
        let rr = pool(Algorithm::RoundRobin, HashKey::SourceIp);
        assert_eq!(request_hash(&rr, ALICE, &none, "/"), None);
        assert_eq!(source_hash(&rr, ALICE), None);
        let ip_hash = pool(Algorithm::IpHash, HashKey::SourceIp);
        assert!(source_hash(&ip_hash, ALICE).is_some());
        assert_ne!(source_hash(&ip_hash, ALICE), source_hash(&ip_hash, BOB));
        assert_eq!(
            request_hash(&ip_hash, ALICE, &none, "/a"),
            source_hash(&ip_hash, ALICE)
        );
    }

    #[test]
    fn maglev_hashes_its_key_and_falls_back_to_the_source() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("u1"));
        headers.insert("cookie", HeaderValue::from_static("a=1; sid=s1"));
        let by_header = pool(Algorithm::Maglev, HashKey::Header("X-User".to_string()));
        let h = request_hash(&by_header, ALICE, &headers, "/");
        assert!(h.is_some());
        assert_eq!(
            h,
            request_hash(&by_header, BOB, &headers, "/other"),
            "same user, any client"
        );
        assert_eq!(
            request_hash(&by_header, ALICE, &HeaderMap::new(), "/"),
            source_hash(&by_header, ALICE),
            "no header: the source IP"
        );
        let by_cookie = pool(Algorithm::Maglev, HashKey::Cookie("sid".to_string()));
        assert_eq!(
            request_hash(&by_cookie, ALICE, &headers, "/"),
            request_hash(&by_cookie, BOB, &headers, "/")
        );
        assert_ne!(request_hash(&by_cookie, ALICE, &headers, "/"), h);
        let by_path = pool(Algorithm::Maglev, HashKey::Path);
        assert_eq!(
            request_hash(&by_path, ALICE, &headers, "/a"),
            request_hash(&by_path, BOB, &HeaderMap::new(), "/a")
        );
        assert_ne!(
            request_hash(&by_path, ALICE, &headers, "/a"),
            request_hash(&by_path, ALICE, &headers, "/b")
        );
    }
}
