//! Sticky sessions on a node: where a connection's or request's session is
//! stuck ([`PoolSticky::by_key`], [`PoolSticky::by_cookie`]), and what to
//! replicate once a backend has taken it ([`PoolSticky::settle`]).
//!
//! The committed tables ([`StickyTables`]) are Raft's: only applying the
//! log changes them, so every node holds the same sessions. A session this
//! node creates is served at once from [`pending`] and proposed through the
//! batching [`Proposer`]; with `contract = "sync"` the first response
//! waits for the commit. A session is refreshed (re-proposed) only when it
//! is older than half its ttl, so traffic does not become Raft traffic.
//!
//! What a client controls is bounded: a new session is proposed only at
//! the pool's [`learn_rate`] (past it, the request is served without
//! stickiness), a `learn_cookie` session only from the application's
//! `Set-Cookie` (never from a cookie a client sent), and the table itself
//! holds at most `max_entries` (applying evicts the oldest).
//!
//! - [`cookie`]: the authenticated cookie of the `cookie` policy.
//! - [`learn_rate`]: the pace of new sessions, per pool and node.
//! - [`metrics`]: hits, misses, re-sticks, proposals, replication lag.
//! - [`upkeep`]: what the leader does for the tables (secret, expiry).

pub mod cookie;
pub mod learn_rate;
pub mod metrics;
mod pending;
pub mod upkeep;

use crate::control::ControlPlane;
use crate::control::proposer::{ProposeError, Proposer};
use cookie::CookieKeys;
use learn_rate::{LearnRate, monotonic_ns};
use metrics::{StickyMetrics, now_ms};
use pending::Pending;
use raftlb_config::{
    Command, Session, StickyChange, StickyContract, StickyKey, StickyKind, StickyPolicy, StickySecret,
    StickyTables,
};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

/// A proposal to wait for (`contract = "sync"`): `Err` says why the
/// session is not known to be committed.
pub type Commit = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The node's sticky-session machinery, shared by every pool and worker.
#[derive(Debug)]
pub struct Sticky {
    tables: Arc<StickyTables>,
    pending: Pending,
    proposer: Proposer,
    metrics: Arc<StickyMetrics>,
    /// Each pool's pace of new sessions, kept across views.
    paces: Mutex<HashMap<String, Arc<LearnRate>>>,
}

impl Sticky {
    pub fn new(control: &ControlPlane) -> Arc<Sticky> {
        Arc::new(Sticky {
            tables: control.sticky_tables(),
            pending: Pending::default(),
            proposer: control.proposer(),
            metrics: control.sticky_metrics(),
            paces: Mutex::default(),
        })
    }

    /// `pool`'s pace, at the policy's rate and burst.
    fn pace(&self, pool: &str, policy: &StickyPolicy) -> Arc<LearnRate> {
        let mut paces = self.paces.lock().unwrap_or_else(PoisonError::into_inner);
        let pace = match paces.get(pool) {
            Some(pace) => Arc::clone(pace),
            None => Arc::clone(paces.entry(pool.to_string()).or_default()),
        };
        pace.set(policy.learn_rate, policy.learn_burst);
        pace
    }

    /// This node's view of a session: its own proposal in flight, else the
    /// committed table.
    pub fn lookup(&self, pool: &str, key: &StickyKey) -> Option<Session> {
        self.pending
            .get(pool, key)
            .or_else(|| self.tables.lookup(pool, key))
    }

    /// Serves `key → backend` here at once and proposes it. `refresh`
    /// proposals are skipped while another proposal for the key is in flight.
    fn propose(
        self: &Arc<Self>,
        pool: &str,
        key: StickyKey,
        backend: SocketAddr,
        replaces: Option<SocketAddr>,
        refresh: bool,
    ) -> Option<Commit> {
        let at_ms = now_ms();
        let session = Session { backend, at_ms };
        if !self.pending.insert(pool, key, session, !refresh) {
            return None;
        }
        StickyMetrics::count(&self.metrics.proposals);
        let change = StickyChange::Stick {
            pool: pool.to_string(),
            key,
            backend,
            replaces,
            at_ms,
        };
        let (this, pool) = (Arc::clone(self), pool.to_string());
        Some(Box::pin(async move {
            let metrics = Arc::clone(&this.metrics);
            let mut attempt = 1;
            let result = loop {
                match this.proposer.propose(Command::Sticky(change.clone())).await {
                    // Applied here too (the admin service waits for that),
                    // so the committed table answers from now on.
                    Ok((_, outcome)) if outcome.is_applied() => break Ok(()),
                    Ok((_, outcome)) => break Err((outcome.rejection(), &metrics.failed_proposals)),
                    // The sessions' share of the queue is full: shed, not retried.
                    Err(e @ ProposeError::StickyFull) => break Err((e.to_string(), &metrics.shed_proposals)),
                    // Lost with a leader: proposing the same session again
                    // is harmless (it was applied, or not).
                    Err(e @ ProposeError::Unconfirmed(_)) if attempt < PROPOSE_ATTEMPTS => {
                        tracing::debug!(%pool, %key, error = %e, attempt, "sticky session proposed again");
                        tokio::time::sleep(RETRY_PAUSE * attempt).await;
                        attempt += 1;
                    }
                    Err(e) => break Err((e.to_string(), &metrics.failed_proposals)),
                }
            };
            this.pending.settle(&pool, &key, session);
            result.map_err(|(reason, counter)| {
                StickyMetrics::count(counter);
                tracing::debug!(%pool, %key, %backend, %reason, "sticky session not committed");
                reason
            })
        }))
    }
}

/// Attempts at proposing one session when its proposal is lost.
const PROPOSE_ATTEMPTS: u32 = 5;
/// The pause before the n-th new attempt is n times this.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// One pool's policy, with what applying it needs.
#[derive(Debug)]
pub struct PoolSticky {
    pub policy: StickyPolicy,
    pool: String,
    runtime: Arc<Sticky>,
    /// `cookie` only, once the cluster's secret is known.
    cookie: Option<CookieKeys>,
    /// Table kinds only: the pace of new sessions.
    learning: Option<Learning>,
}

/// A table pool's pace of new sessions, and the count of those it refused.
#[derive(Debug)]
struct Learning {
    pace: Arc<LearnRate>,
    rate_limited: Arc<AtomicU64>,
}

/// Where one connection's or request's session points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affinity {
    /// The session's table key, when the client presented one.
    pub key: Option<StickyKey>,
    /// The backend the session is stuck to, when that backend may take it.
    pub preferred: Option<SocketAddr>,
    /// What the table holds for the key, which a new stick must replace.
    replaces: Option<SocketAddr>,
    /// Whether a live session exists (its backend may be unable to take it).
    existed: bool,
    /// When the session was stuck or last refreshed (ms since the epoch).
    at_ms: u64,
}

/// What [`PoolSticky::settle`] decided.
#[derive(Default)]
pub struct Settled {
    /// Wait for this before answering (`sync`, new or moved sessions).
    pub commit: Option<Commit>,
    /// `cookie`: the `Set-Cookie` value to send.
    pub set_cookie: Option<String>,
}

impl std::fmt::Debug for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settled")
            .field("commit", &self.commit.is_some())
            .field("set_cookie", &self.set_cookie)
            .finish()
    }
}

impl PoolSticky {
    pub fn new(
        policy: StickyPolicy,
        pool: &str,
        runtime: &Arc<Sticky>,
        secret: Option<&StickySecret>,
        backends: impl Iterator<Item = SocketAddr>,
    ) -> Self {
        let cookie = match (policy.kind, secret) {
            (StickyKind::Cookie, Some(secret)) => Some(CookieKeys::new(secret, pool, backends)),
            _ => None,
        };
        let learning = policy.uses_table().then(|| Learning {
            pace: runtime.pace(pool, &policy),
            rate_limited: runtime.metrics.rate_limited(pool),
        });
        PoolSticky {
            policy,
            pool: pool.to_string(),
            runtime: Arc::clone(runtime),
            cookie,
            learning,
        }
    }

    /// Whether this node may propose one more new session for the pool
    /// now; a refusal is counted.
    fn may_learn(&self) -> bool {
        let Some(learning) = &self.learning else {
            return true;
        };
        if learning.pace.admit(monotonic_ns()) {
            return true;
        }
        StickyMetrics::count(&learning.rate_limited);
        false
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.policy.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The session of a table key; `accepts` says whether a backend may
    /// still take its sessions (enabled or draining, still in the pool).
    pub fn by_key(&self, key: StickyKey, accepts: impl Fn(SocketAddr) -> bool) -> Affinity {
        let mut affinity = Affinity {
            key: Some(key),
            ..Affinity::default()
        };
        if let Some(session) = self.runtime.lookup(&self.pool, &key) {
            affinity.replaces = Some(session.backend);
            // The leader's expiry pass may not have run yet: a session past
            // its ttl is over, whatever the table still says.
            if session.at_ms.saturating_add(self.ttl_ms()) > now_ms() {
                affinity.existed = true;
                affinity.at_ms = session.at_ms;
                affinity.preferred = accepts(session.backend).then_some(session.backend);
            }
        }
        affinity
    }

    /// The session of a client address (`source_ip`).
    pub fn by_source(&self, client: IpAddr, accepts: impl Fn(SocketAddr) -> bool) -> Affinity {
        self.by_key(self.policy.source_key(client), accepts)
    }

    /// The session a `cookie` cookie names; anything not genuine, expired
    /// or for a backend that may not take it counts as no session.
    pub fn by_cookie(&self, value: &[u8], accepts: impl Fn(SocketAddr) -> bool) -> Affinity {
        let Some((backend, issued_s)) = self.cookie.as_ref().and_then(|keys| keys.check(value)) else {
            return Affinity::default();
        };
        let at_ms = u64::from(issued_s) * 1000;
        if at_ms.saturating_add(self.ttl_ms()) <= now_ms() {
            return Affinity::default();
        }
        Affinity {
            key: None,
            preferred: accepts(backend).then_some(backend),
            replaces: Some(backend),
            existed: true,
            at_ms,
        }
    }

    /// After `backend` has taken the connection or request: counts it, and
    /// proposes (or, for `cookie`, issues) what changed — a new session, a
    /// moved one, or a refresh once half the ttl has passed.
    pub fn settle(&self, affinity: &Affinity, backend: SocketAddr) -> Settled {
        let metrics = &self.runtime.metrics;
        let kind = self.policy.kind;
        let sessionless = affinity.key.is_none() && kind != StickyKind::Cookie;
        // A `learn_cookie` session starts only from the application's
        // `Set-Cookie` ([`learn`](Self::learn)): a cookie the client sent
        // that names no live session is no session.
        let invented = kind == StickyKind::LearnCookie && !affinity.existed;
        if sessionless || invented {
            // No cookie or header to stick by (yet): nothing to count or keep.
            return Settled::default();
        }
        let hit = affinity.preferred == Some(backend);
        if !hit && !affinity.existed && !self.may_learn() {
            // Past the pace: served where the balancer sent it, not kept.
            return Settled::default();
        }
        let counter = match (hit, affinity.existed) {
            (true, _) => &metrics.hits,
            (false, true) => &metrics.resticks,
            (false, false) => &metrics.misses,
        };
        StickyMetrics::count(counter);
        let refresh = hit && now_ms().saturating_sub(affinity.at_ms) > self.ttl_ms() / 2;
        if hit && !refresh {
            return Settled::default();
        }
        if kind == StickyKind::Cookie {
            let Some(keys) = &self.cookie else {
                return Settled::default();
            };
            let issued = u32::try_from(now_ms() / 1000).unwrap_or(u32::MAX);
            return Settled {
                commit: None,
                set_cookie: Some(keys.issue(backend, issued)),
            };
        }
        let Some(key) = affinity.key else {
            return Settled::default();
        };
        let commit = self
            .runtime
            .propose(&self.pool, key, backend, affinity.replaces, refresh);
        Settled {
            commit: self.wait_or_spawn(commit, refresh),
            set_cookie: None,
        }
    }

    /// `learn_cookie`: the application set its session cookie to `value`
    /// in a response `backend` sent; stick that session to `backend` (a
    /// new one at the pool's pace). The only way such a session starts.
    pub fn learn(&self, value: &[u8], backend: SocketAddr) -> Option<Commit> {
        let key = StickyKey::of(value);
        let current = self.runtime.lookup(&self.pool, &key);
        if current.is_some_and(|s| s.backend == backend) {
            return None;
        }
        if current.is_none() && !self.may_learn() {
            return None;
        }
        StickyMetrics::count(&self.runtime.metrics.misses);
        let commit = self
            .runtime
            .propose(&self.pool, key, backend, current.map(|s| s.backend), false);
        self.wait_or_spawn(commit, false)
    }

    /// The commit for the caller to await (`sync`, not a refresh), or none
    /// after spawning it to run by itself.
    fn wait_or_spawn(&self, commit: Option<Commit>, refresh: bool) -> Option<Commit> {
        let commit = commit?;
        if self.policy.contract == StickyContract::Sync && !refresh {
            return Some(commit);
        }
        tokio::spawn(async move {
            let _ = commit.await;
        });
        None
    }

    /// The `Set-Cookie` header value for a `cookie` session.
    pub fn cookie_header(&self, value: &str) -> String {
        let attributes = &self.policy.cookie;
        let mut header = format!("{}={value}; Path={}", self.policy.name, attributes.path);
        if attributes.max_age {
            header.push_str(&format!("; Max-Age={}", self.policy.ttl.as_secs()));
        }
        if attributes.secure {
            header.push_str("; Secure");
        }
        if attributes.http_only {
            header.push_str("; HttpOnly");
        }
        if let Some(same_site) = attributes.same_site {
            header.push_str("; SameSite=");
            header.push_str(same_site.attribute());
        }
        header
    }
}
