//! Sticky sessions as configured and as replicated: a pool's
//! [`StickyPolicy`] (`[pool.sticky]`), the [`StickyKey`] a session is known
//! by, and the [`StickyChange`]s the Raft log carries for the tables.
//!
//! A table key is the first 16 bytes of the SHA-256 of what identifies the
//! session (the application's cookie value, a header value, the masked
//! client address): fixed-size, so an entry costs the same whatever the
//! client sent, and the same on every node and every version.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How a pool keeps a client on one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickyPolicy {
    pub kind: StickyKind,
    /// The cookie (`cookie`, `learn_cookie`) or header (`header`) name.
    pub name: String,
    /// How long a session lives after it was last used.
    pub ttl: Duration,
    pub contract: StickyContract,
    /// `source_ip`: clients in one IPv4 prefix of this length share a session.
    pub source_prefix_v4: u8,
    /// `source_ip`: the same for IPv6 clients.
    pub source_prefix_v6: u8,
    /// `cookie`: the attributes of the inserted cookie.
    pub cookie: CookieAttributes,
    /// Table kinds: the most sessions the pool's table holds. A new session
    /// in a full table evicts the oldest one (least recently stuck or
    /// refreshed, by the time its proposer gave it; ties by key), when it
    /// is applied, so every node evicts the same one.
    pub max_entries: u64,
    /// Table kinds: new sessions one node proposes per second for the pool;
    /// past that (and the burst) a new session is served without
    /// stickiness. Per node, so the cluster learns up to nodes × this.
    pub learn_rate: u32,
    /// How many new sessions a node may propose at once before
    /// `learn_rate` paces it.
    pub learn_burst: u32,
}

impl StickyPolicy {
    pub const DEFAULT_COOKIE: &str = "RLBSESS";
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
    pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
    /// Also the default burst: one second's worth.
    pub const DEFAULT_LEARN_RATE: u32 = 1000;

    /// A policy of `kind` with every default.
    pub fn new(kind: StickyKind, name: &str) -> Self {
        StickyPolicy {
            kind,
            name: name.to_string(),
            ttl: Self::DEFAULT_TTL,
            contract: StickyContract::Async,
            source_prefix_v4: 32,
            source_prefix_v6: 128,
            cookie: CookieAttributes::default(),
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            learn_rate: Self::DEFAULT_LEARN_RATE,
            learn_burst: Self::DEFAULT_LEARN_RATE,
        }
    }

    /// Whether sessions live in the replicated table (every kind but
    /// `cookie`, whose cookie itself names the backend).
    pub fn uses_table(&self) -> bool {
        self.kind != StickyKind::Cookie
    }

    /// The key a client address maps to under `source_ip`.
    pub fn source_key(&self, client: IpAddr) -> StickyKey {
        match client {
            IpAddr::V4(ip) => {
                let bits = u32::from(ip) & mask32(self.source_prefix_v4);
                StickyKey::of_parts(&[b"4", &bits.to_be_bytes()])
            }
            IpAddr::V6(ip) => {
                let bits = u128::from(ip) & mask128(self.source_prefix_v6);
                StickyKey::of_parts(&[b"6", &bits.to_be_bytes()])
            }
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// What identifies a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StickyKind {
    /// The balancer sets a cookie naming the backend, authenticated with
    /// the cluster's secret.
    Cookie,
    /// The application's own session cookie, learned from `Set-Cookie`.
    LearnCookie,
    /// A request header's value.
    Header,
    /// The client's address (also for TCP and UDP listeners).
    SourceIp,
}

impl StickyKind {
    pub const ALL: [(&'static str, StickyKind); 4] = [
        ("cookie", StickyKind::Cookie),
        ("learn_cookie", StickyKind::LearnCookie),
        ("header", StickyKind::Header),
        ("source_ip", StickyKind::SourceIp),
    ];

    pub fn name(self) -> &'static str {
        match self {
            StickyKind::Cookie => "cookie",
            StickyKind::LearnCookie => "learn_cookie",
            StickyKind::Header => "header",
            StickyKind::SourceIp => "source_ip",
        }
    }

    /// True when the key comes from HTTP (so the pool needs HTTP listeners).
    pub fn needs_http(self) -> bool {
        !matches!(self, StickyKind::SourceIp)
    }
}

/// When a new session's first response may leave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StickyContract {
    /// At once; the entry is committed within the replication lag, and a
    /// balancer dying inside that window forgets it.
    #[default]
    Async,
    /// Only once the entry is committed: a session the client has seen
    /// survives any single balancer's death.
    Sync,
}

impl StickyContract {
    pub const ALL: [(&'static str, StickyContract); 2] =
        [("async", StickyContract::Async), ("sync", StickyContract::Sync)];
}

/// `SameSite` of the inserted cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub const ALL: [(&'static str, SameSite); 3] = [
        ("lax", SameSite::Lax),
        ("strict", SameSite::Strict),
        ("none", SameSite::None),
    ];

    pub fn attribute(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// The attributes of a `cookie` policy's cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CookieAttributes {
    pub path: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    /// Send `Max-Age` (the policy's ttl); without it the cookie lasts as
    /// long as the browser session (the balancer still enforces the ttl).
    pub max_age: bool,
}

impl Default for CookieAttributes {
    fn default() -> Self {
        CookieAttributes {
            path: "/".to_string(),
            secure: false,
            http_only: true,
            same_site: Some(SameSite::Lax),
            max_age: true,
        }
    }
}

/// A session's key in a table: 16 bytes of SHA-256 of what identifies it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StickyKey(pub [u8; 16]);

impl StickyKey {
    /// The key of a cookie or header value.
    pub fn of(value: &[u8]) -> Self {
        Self::of_parts(&[value])
    }

    fn of_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        StickyKey(key)
    }
}

impl fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StickyKey({self})")
    }
}

impl fmt::Display for StickyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The cluster's secret for authenticating `cookie` sessions, set once by
/// the first leader (random bytes it drew) and replicated like the rest.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickySecret(pub [u8; 32]);

impl fmt::Debug for StickySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StickySecret(..)")
    }
}

/// A change to the sticky tables, as the Raft log carries it. Time is the
/// proposer's wall clock in milliseconds since the Unix epoch, so applying
/// never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StickyChange {
    /// Sticks `key` to `backend`. `replaces` is the backend the proposer
    /// saw the key stuck to (`None`: a new session). If the table holds
    /// another backend for the key than `replaces`, another node stuck it
    /// first and this change is refused: the first session wins. A new key
    /// in a table holding `max_entries` evicts the oldest entries first.
    Stick {
        pool: String,
        key: StickyKey,
        backend: SocketAddr,
        replaces: Option<SocketAddr>,
        at_ms: u64,
    },
    /// Forgets every session last used `ttl` or more before `now_ms`, or
    /// stuck to a backend no longer in its pool, then the oldest of a table
    /// still over its `max_entries` (lowered since). Proposed by the leader.
    Expire { now_ms: u64 },
    /// Forgets every session of a pool (`raftlb ctl sticky flush`).
    Flush { pool: String },
}

impl fmt::Display for StickyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StickyChange::Stick {
                pool, key, backend, ..
            } => write!(f, "stick {key} to {backend} in pool {pool}"),
            StickyChange::Expire { now_ms } => write!(f, "expire sticky sessions at {now_ms} ms"),
            StickyChange::Flush { pool } => write!(f, "flush sticky sessions of pool {pool}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_keys_follow_the_prefix() {
        let mut policy = StickyPolicy::new(StickyKind::SourceIp, "");
        policy.source_prefix_v4 = 24;
        let a = policy.source_key("198.18.0.1".parse().unwrap());
        let b = policy.source_key("198.18.0.200".parse().unwrap());
        let c = policy.source_key("198.18.1.1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        policy.source_prefix_v4 = 32;
        assert_ne!(
            policy.source_key("198.18.0.1".parse().unwrap()),
            policy.source_key("198.18.0.200".parse().unwrap())
        );
        policy.source_prefix_v6 = 64;
        assert_eq!(
            policy.source_key("2001:2::1".parse().unwrap()),
            policy.source_key("2001:2::ffff".parse().unwrap())
        );
        assert_eq!(mask32(0), 0);
        assert_eq!(mask128(0), 0);
    }

    #[test]
    fn keys_are_stable_digests() {
        // The first 16 bytes of SHA-256("abc"): every node and version agree.
        assert_eq!(
            StickyKey::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223"
        );
    }
}
