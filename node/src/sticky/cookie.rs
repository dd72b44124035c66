//! The `cookie` policy's cookie: it names the backend, opaquely, and is
//! authenticated, so a client can neither read which backend it is on nor
//! steer itself to another by editing it.
//!
//! Value: base64url of `tag (8) ‖ issued (4, seconds since the epoch, big
//! endian) ‖ mac (12)`. `tag` is HMAC-SHA256(pool key, backend address)
//! truncated, so it identifies a backend without revealing it; `mac` is
//! HMAC-SHA256(pool key, tag ‖ issued) truncated. The pool key is
//! HMAC-SHA256(cluster secret, "raftlb sticky cookie" ‖ pool name): a
//! cookie from one pool means nothing in another. The cluster secret is
//! replicated state, so every node issues and accepts the same cookies.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use raftlb_config::StickySecret;
use sha2::Sha256;
use std::net::SocketAddr;

type HmacSha256 = Hmac<Sha256>;

const TAG: usize = 8;
const ISSUED: usize = 4;
const MAC: usize = 12;
const RAW: usize = TAG + ISSUED + MAC;

/// Issues and checks one pool's cookies.
#[derive(Clone)]
pub struct CookieKeys {
    key: HmacSha256,
    /// Each backend of the pool with its tag.
    tags: Vec<([u8; TAG], SocketAddr)>,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieKeys")
            .field("backends", &self.tags.len())
            .finish()
    }
}

impl CookieKeys {
    pub fn new(secret: &StickySecret, pool: &str, backends: impl Iterator<Item = SocketAddr>) -> Self {
        let mut derive = new_mac(&secret.0);
        derive.update(b"raftlb sticky cookie");
        derive.update(pool.as_bytes());
        let key = new_mac(&derive.finalize().into_bytes());
        let tags = backends.map(|b| (tag(&key, b), b)).collect();
        CookieKeys { key, tags }
    }

    /// The cookie value for `backend`, issued at `issued_s`.
    pub fn issue(&self, backend: SocketAddr, issued_s: u32) -> String {
        let mut raw = [0u8; RAW];
        raw[..TAG].copy_from_slice(&tag(&self.key, backend));
        raw[TAG..TAG + ISSUED].copy_from_slice(&issued_s.to_be_bytes());
        let mac = self.mac(&raw[..TAG + ISSUED]);
        raw[TAG + ISSUED..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The backend and issue time a genuine cookie names; `None` for
    /// anything else (edited, from another pool or cluster, or naming a
    /// backend no longer in the pool).
    pub fn check(&self, value: &[u8]) -> Option<(SocketAddr, u32)> {
        let mut raw = [0u8; RAW];
        match URL_SAFE_NO_PAD.decode_slice(value, &mut raw) {
            Ok(RAW) => {}
            _ => return None,
        }
        let mut verify = self.key.clone();
        verify.update(&raw[..TAG + ISSUED]);
        verify.verify_truncated_left(&raw[TAG + ISSUED..]).ok()?;
        let issued = u32::from_be_bytes(raw[TAG..TAG + ISSUED].try_into().ok()?);
        let backend = self.tags.iter().find(|(t, _)| t[..] == raw[..TAG])?.1;
        Some((backend, issued))
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC] {
        let mut mac = self.key.clone();
        mac.update(data);
        let mut out = [0; MAC];
        out.copy_from_slice(&mac.finalize().into_bytes()[..MAC]);
        out
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts every key length"),
    }
}

fn tag(key: &HmacSha256, backend: SocketAddr) -> [u8; TAG] {
    let mut mac = key.clone();
    mac.update(b"backend");
    mac.update(backend.to_string().as_bytes());
    let mut out = [0; TAG];
    out.copy_from_slice(&mac.finalize().into_bytes()[..TAG]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: u8, pool: &str) -> CookieKeys {
        let backends = [9001, 9002].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        CookieKeys::new(&StickySecret([secret; 32]), pool, backends.into_iter())
    }

    #[test]
    fn genuine_cookies_name_their_backend() {
        let keys = keys(1, "app");
        let b = SocketAddr::from(([127, 0, 0, 1], 9002));
        let value = keys.issue(b, 1_700_000_000);
        assert_eq!(value.len(), 32);
        assert!(!value.contains("9002") && !value.contains("127"));
        assert_eq!(keys.check(value.as_bytes()), Some((b, 1_700_000_000)));
    }

    #[test]
    fn edited_or_foreign_cookies_are_refused() {
        let keys = keys(1, "app");
        let value = keys.issue(SocketAddr::from(([127, 0, 0, 1], 9001)), 5);
        for i in 0..value.len() {
            let mut edited = value.clone().into_bytes();
            edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(keys.check(&edited), None, "edited at {i}");
        }
        assert_eq!(
            self::keys(2, "app").check(value.as_bytes()),
            None,
            "another cluster"
        );
        assert_eq!(self::keys(1, "web").check(value.as_bytes()), None, "another pool");
        assert_eq!(keys.check(b""), None);
        assert_eq!(keys.check(&[0xff; 64]), None);
        // A backend that left the pool is not found.
        let other = CookieKeys::new(&StickySecret([1; 32]), "app", std::iter::empty());
        assert_eq!(other.check(value.as_bytes()), None);
    }
}
