//! UDP relaying. Each client address gets a session: a socket connected to
//! the backend its sticky session names (`source_ip`) or the balancer
//! chose, so replies arrive on that socket
//! and go back to that client from the address it sent to (the VIP on a
//! wildcard bind, [`udp_front`]). A session with no
//! datagram either way for the listener's idle timeout is forgotten; at most
//! `max_connections` sessions live at once (datagrams from new clients beyond
//! that are dropped), and a new session must pass admission (the ACL and
//! its source's limits: a source's sessions count as its connections).
//! A draining listener stops reading but relays replies until its
//! sessions fall quiet. With `quic = true`, a new session goes to the
//! backend its first datagram's connection ID names, when one does
//! ([`quic_route`]).

use super::quic_route::{self, CidTable};
use super::udp_front::Front;
use crate::backend::ActiveGuard;
use crate::balance;
use crate::dataplane::Shutdown;
use crate::dataplane::admission::{self, Admitted};
use crate::view::{Attempts, Next, PoolView, SharedView};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Largest datagram relayed (the UDP maximum payload).
const MAX_DATAGRAM: usize = 65_535;
/// A draining listener's sessions end once quiet this long ([`linger`]).
const DRAIN_QUIET: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Session {
    /// Tells this session from a later one of the same client.
    id: u64,
    upstream: Arc<UdpSocket>,
    activity: Arc<AtomicU64>,
}

/// Relays datagrams for one listener until shutdown.
pub async fn serve(
    front: UdpSocket,
    listener: String,
    view: SharedView,
    descriptors: Arc<Semaphore>,
    shutdown: Shutdown,
) {
    let front = match Front::new(front) {
        Ok(front) => Arc::new(front),
        Err(e) => {
            tracing::error!(listener, error = %e, "cannot set up the UDP listener's socket; it serves nothing");
            return;
        }
    };
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let (expired_tx, mut expired_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let quic = view.load().listener(&listener).and_then(|l| {
        let capacity = (l.spec.max_connections as usize).saturating_mul(4);
        l.spec
            .quic
            .route_by_connection_id
            .then(|| Arc::new(Mutex::new(CidTable::new(capacity))))
    });
    let relay = Relay {
        front: Arc::clone(&front),
        listener: listener.clone(),
        view,
        descriptors,
        expired: expired_tx,
        quic,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    loop {
        let received = tokio::select! {
            received = front.recv(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(listener, error = %e, "UDP receive failed");
                    continue;
                }
            },
            Some((client, id)) = expired_rx.recv() => {
                if sessions.get(&client).is_some_and(|s| s.id == id) {
                    sessions.remove(&client);
                }
                continue;
            }
            () = shutdown.token.cancelled() => {
                linger(&sessions).await;
                return;
            }
        };
        let client = received.from;
        for datagram in received.datagrams(&buf) {
            if !sessions.contains_key(&client) {
                next_id += 1;
                let opened = relay.open_session((client, received.to), next_id, sessions.len(), datagram);
                let Some(session) = opened.await else {
                    continue;
                };
                sessions.insert(client, session);
            }
            let Some(session) = sessions.get(&client) else {
                continue;
            };
            session.activity.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = session.upstream.send(datagram).await {
                tracing::debug!(listener, %client, error = %e, "UDP send to backend failed; session closed");
                sessions.remove(&client);
            }
        }
    }
}

/// Once a draining listener reads no more (a successor may read its
/// socket now), waits until its sessions have seen nothing for
/// [`DRAIN_QUIET`], so replies to what it forwarded still reach their
/// clients. The drain's deadline bounds it.
async fn linger(sessions: &HashMap<SocketAddr, Session>) {
    let seen = || -> u64 {
        sessions
            .values()
            .map(|s| s.activity.load(Ordering::Relaxed))
            .sum()
    };
    if sessions.is_empty() {
        return;
    }
    let mut last = seen();
    loop {
        tokio::time::sleep(DRAIN_QUIET).await;
        match seen() {
            now if now == last => return,
            now => last = now,
        }
    }
}

/// What one listener's sessions are opened with.
#[derive(Debug)]
struct Relay {
    front: Arc<Front>,
    listener: String,
    view: SharedView,
    descriptors: Arc<Semaphore>,
    /// Where a session's reply task reports that it has expired.
    expired: mpsc::UnboundedSender<(SocketAddr, u64)>,
    /// `quic = true`: the connection IDs backends issued.
    quic: Option<Arc<Mutex<CidTable>>>,
}

impl Relay {
    /// The backend that issued the QUIC connection ID `datagram` is
    /// addressed to, if it may still take it: from this listener's table,
    /// else from the pool's replicated one.
    fn quic_backend(&self, pool: &PoolView, datagram: &[u8]) -> Option<SocketAddr> {
        let table = self.quic.as_ref()?;
        let local = table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .backend_of(datagram);
        if let Some(backend) = local.filter(|b| pool.keeps_sessions(*b)) {
            return Some(backend);
        }
        let sticky = pool.sticky.as_ref().filter(|s| s.policy.uses_table())?;
        let lengths = quic_route::every_length();
        quic_route::candidates(datagram, &lengths)
            .into_iter()
            .find_map(|cid| {
                sticky
                    .by_key(raftlb_config::sticky::StickyKey::of(cid), |b| {
                        pool.keeps_sessions(b)
                    })
                    .preferred
            })
    }

    /// Starts a session for a new client (`open`: sessions open now): picks
    /// a backend, connects a socket to it and spawns the task that relays its
    /// replies, from `reply_from` (where the client sent to). `first`: the
    /// datagram that opens it.
    async fn open_session(
        &self,
        (client, reply_from): (SocketAddr, Option<IpAddr>),
        id: u64,
        open: usize,
        first: &[u8],
    ) -> Option<Session> {
        let (listener, front, expired) = (self.listener.as_str(), &self.front, &self.expired);
        let route = self.view.load().listener(listener).cloned()?;
        if open >= route.spec.max_connections as usize {
            tracing::warn!(listener, %client, "UDP session limit reached; datagram dropped");
            return None;
        }
        let now = crate::health::now_ms();
        let Ok(descriptor) = Arc::clone(&self.descriptors).try_acquire_owned() else {
            tracing::debug!(listener, %client, "the data plane's descriptors are all in use; datagram dropped");
            return None;
        };
        let admitted = match admission::admit(&route.guard, &route.acl, &route.spec.limits, client.ip(), now)
        {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracing::debug!(listener, %client, reason = refusal.name(), "UDP session refused; datagram dropped");
                return None;
            }
        };
        let pool = route.pool.as_ref()?;
        let affinity = pool
            .sticky
            .as_ref()
            .map(|sticky| sticky.by_source(client.ip(), |b| pool.keeps_sessions(b)));
        let routed = self.quic_backend(pool, first);
        let preferred = routed.or(affinity.as_ref().and_then(|a| a.preferred));
        let mut attempts = Attempts::with_hash(balance::source_hash(&pool.spec, client.ip()));
        // No queue for datagrams: with every backend full, this one is dropped.
        let Next::Reserved(slot) = pool.next_backend(preferred, &mut attempts) else {
            tracing::debug!(listener, %client, "no backend with room for a UDP session; datagram dropped");
            return None;
        };
        let backend = Arc::clone(slot.backend());
        if let (Some(sticky), Some(affinity), None) = (&pool.sticky, &affinity, routed)
            && let Some(commit) = sticky.settle(affinity, backend.address()).commit
        {
            // One task relays every client's datagrams: it cannot wait for a
            // commit, so `sync` is `async` here.
            tokio::spawn(commit);
        }
        let local: SocketAddr = if backend.address().is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let upstream = match UdpSocket::bind(local).await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(listener, error = %e, "cannot open UDP socket for a session");
                return None;
            }
        };
        if let Err(e) = upstream.connect(backend.address()).await {
            tracing::warn!(listener, backend = %backend.address(), error = %e, "UDP connect failed");
            return None;
        }
        let session = Session {
            id,
            upstream: Arc::new(upstream),
            activity: Arc::new(AtomicU64::new(0)),
        };
        let learner = self.quic.as_ref().map(|table| Learner {
            table: Arc::clone(table),
            pool: Arc::clone(pool),
            backend: backend.address(),
        });
        tokio::spawn(relay_replies(
            Arc::clone(front),
            Arc::clone(&session.upstream),
            (client, reply_from, id),
            Arc::clone(&session.activity),
            route.spec.idle_timeout,
            (slot, admitted, descriptor),
            expired.clone(),
            learner,
        ));
        Some(session)
    }
}

/// Learns the QUIC connection IDs one session's backend issues.
#[derive(Debug)]
struct Learner {
    table: Arc<Mutex<CidTable>>,
    pool: Arc<PoolView>,
    backend: SocketAddr,
}

impl Learner {
    /// A datagram from the backend: a long header's source ID is one it
    /// issued, kept here and, new, in the pool's sticky table.
    fn saw(&self, datagram: &[u8]) {
        let Some(cid) = quic_route::long_header_scid(datagram) else {
            return;
        };
        let new = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learn(cid, self.backend);
        if let Some(sticky) = self.pool.sticky.as_ref().filter(|s| new && s.policy.uses_table()) {
            // Spawned: the reply goes on without waiting for Raft.
            if let Some(commit) = sticky.learn(cid, self.backend) {
                tokio::spawn(commit);
            }
        }
    }
}

/// Sends the backend's replies to the client until the session goes idle or
/// the backend's socket fails, then reports the session expired.
#[allow(clippy::too_many_arguments)]
async fn relay_replies(
    front: Arc<Front>,
    upstream: Arc<UdpSocket>,
    (client, reply_from, id): (SocketAddr, Option<IpAddr>, u64),
    activity: Arc<AtomicU64>,
    idle: Duration,
    // Held for the session's life: it counts against its backend, its
    // source and the data plane's descriptors.
    _counted: (ActiveGuard, Admitted, OwnedSemaphorePermit),
    expired: mpsc::UnboundedSender<(SocketAddr, u64)>,
    learner: Option<Learner>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut seen = activity.load(Ordering::Relaxed);
    loop {
        match tokio::time::timeout(idle, upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                activity.fetch_add(1, Ordering::Relaxed);
                if let Some(learner) = &learner {
                    learner.saw(&buf[..len]);
                }
                if let Err(e) = front.send(&buf[..len], client, reply_from).await {
                    tracing::debug!(%client, error = %e, "UDP reply to client failed");
                }
            }
            Ok(Err(e)) => {
                // e.g. ECONNREFUSED from an ICMP port-unreachable: the next
                // datagram from this client opens a new session.
                tracing::debug!(%client, error = %e, "UDP backend socket failed");
                break;
            }
            Err(_) => {
                // Expire after between `idle` and 2 × `idle` of silence.
                let now = activity.load(Ordering::Relaxed);
                if now == seen {
                    break;
                }
                seen = now;
            }
        }
    }
    let _ = expired.send((client, id));
}
