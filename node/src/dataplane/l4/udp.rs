//! UDP relaying. Each client address gets a session: a socket connected to
//! the backend its sticky session names (`source_ip`) or the balancer
//! chose, so replies arrive on that socket
//! and go back to that client from the listener's address. A session with no
//! datagram either way for the listener's idle timeout is forgotten; at most
//! `max_connections` sessions live at once (datagrams from new clients beyond
//! that are dropped), and a new session must pass admission (the ACL and
//! its source's limits: a source's sessions count as its connections).
//! A draining listener stops reading but relays replies until its
//! sessions fall quiet.

use crate::backend::ActiveGuard;
use crate::balance;
use crate::dataplane::Shutdown;
use crate::dataplane::admission::{self, Admitted};
use crate::view::{Attempts, Next, SharedView};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    let front = Arc::new(front);
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let (expired_tx, mut expired_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let relay = Relay {
        front: Arc::clone(&front),
        listener: listener.clone(),
        view,
        descriptors,
        expired: expired_tx,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    loop {
        let (len, client) = tokio::select! {
            received = front.recv_from(&mut buf) => match received {
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
        if !sessions.contains_key(&client) {
            next_id += 1;
            let Some(session) = relay.open_session(client, next_id, sessions.len()).await else {
                continue;
            };
            sessions.insert(client, session);
        }
        let Some(session) = sessions.get(&client) else {
            continue;
        };
        session.activity.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = session.upstream.send(&buf[..len]).await {
            tracing::debug!(listener, %client, error = %e, "UDP send to backend failed; session closed");
            sessions.remove(&client);
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
    front: Arc<UdpSocket>,
    listener: String,
    view: SharedView,
    descriptors: Arc<Semaphore>,
    /// Where a session's reply task reports that it has expired.
    expired: mpsc::UnboundedSender<(SocketAddr, u64)>,
}

impl Relay {
    /// Starts a session for a new client (`open`: sessions open now): picks
    /// a backend, connects a socket to it and spawns the task that relays its
    /// replies.
    async fn open_session(&self, client: SocketAddr, id: u64, open: usize) -> Option<Session> {
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
        let preferred = affinity.as_ref().and_then(|a| a.preferred);
        let mut attempts = Attempts::with_hash(balance::source_hash(&pool.spec, client.ip()));
        // No queue for datagrams: with every backend full, this one is dropped.
        let Next::Reserved(slot) = pool.next_backend(preferred, &mut attempts) else {
            tracing::debug!(listener, %client, "no backend with room for a UDP session; datagram dropped");
            return None;
        };
        let backend = Arc::clone(slot.backend());
        if let (Some(sticky), Some(affinity)) = (&pool.sticky, &affinity)
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
        tokio::spawn(relay_replies(
            Arc::clone(front),
            Arc::clone(&session.upstream),
            (client, id),
            Arc::clone(&session.activity),
            route.spec.idle_timeout,
            (slot, admitted, descriptor),
            expired.clone(),
        ));
        Some(session)
    }
}

/// Sends the backend's replies to the client until the session goes idle or
/// the backend's socket fails, then reports the session expired.
async fn relay_replies(
    front: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    (client, id): (SocketAddr, u64),
    activity: Arc<AtomicU64>,
    idle: Duration,
    // Held for the session's life: it counts against its backend, its
    // source and the data plane's descriptors.
    _counted: (ActiveGuard, Admitted, OwnedSemaphorePermit),
    expired: mpsc::UnboundedSender<(SocketAddr, u64)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut seen = activity.load(Ordering::Relaxed);
    loop {
        match tokio::time::timeout(idle, upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                activity.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = front.send_to(&buf[..len], client).await {
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
