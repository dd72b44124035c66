//! TCP proxying: connect to a backend (the client's sticky session's first,
//! with `source_ip` stickiness; trying others on failure), then copy
//! bytes both ways. A half-close is passed on (EOF from one side shuts down
//! writing to the other while the reverse direction keeps flowing). A
//! connection with no bytes either way for the listener's idle timeout is
//! closed. The client is who the connection speaks for ([`Origin`]: an
//! accepted PROXY header's client), and a pool with `proxy_protocol` sends
//! its backend a header naming it. Each connection ends with its [`Record`].

use crate::access_log::{Record, StickyOutcome};
use crate::dataplane::proxy_protocol::Origin;
use crate::dataplane::{splice::splice, upstream};
use crate::view::{ListenerView, SharedView};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Serves one accepted client connection to its end, counted open in its
/// listener's traffic meanwhile and recorded when it ends.
pub async fn serve(
    client: TcpStream,
    origin: Origin,
    listener: &str,
    view: &SharedView,
    deadline: &CancellationToken,
) {
    let peer = origin.client;
    let Some(route) = view.load().listener(listener).cloned() else {
        return;
    };
    let _open = route.traffic.open(true);
    let mut record = Record::connection(Arc::clone(&route), peer);
    proxy(client, &route, &origin, &mut record, deadline).await;
    record.finish();
}

/// Connects the client to a backend of the listener's pool and copies
/// bytes until either side is done; what happened goes in `record`.
async fn proxy(
    client: TcpStream,
    route: &ListenerView,
    origin: &Origin,
    record: &mut Record,
    deadline: &CancellationToken,
) {
    let (listener, peer) = (route.spec.name.as_str(), record.client);
    let Some(pool) = &route.pool else { return };
    record.pool = Some(Arc::clone(pool));
    let affinity = pool
        .sticky
        .as_ref()
        .map(|sticky| sticky.by_source(peer.ip(), |b| pool.keeps_sessions(b)));
    let preferred = affinity.as_ref().and_then(|a| a.preferred);
    let connecting = Instant::now();
    let (backend, guard) = match upstream::connect(pool, preferred, origin).await {
        Ok(connected) => connected,
        Err(e) => {
            tracing::warn!(listener, client = %peer, error = %e, "no backend for TCP connection");
            return;
        }
    };
    let address = guard.backend().address();
    record.connect = Some(connecting.elapsed());
    record.backend = Some(address);
    record.sticky = StickyOutcome::of(pool.sticky.is_some(), preferred, address);
    if let (Some(sticky), Some(affinity)) = (&pool.sticky, &affinity)
        && let Some(commit) = sticky.settle(affinity, address).commit
        && let Err(reason) = commit.await
    {
        // `sync`: a session the client sees must be committed.
        tracing::warn!(listener, client = %peer, %reason, "sticky session not committed; connection closed");
        return;
    }
    match splice(client, backend, route.spec.idle_timeout, deadline).await {
        Ok((up, down)) => {
            (record.received, record.sent) = (up, down);
            tracing::debug!(listener, client = %peer, backend = %address, up, down, "TCP connection closed")
        }
        Err(e) => {
            tracing::debug!(listener, client = %peer, backend = %address, error = %e, "TCP connection ended")
        }
    }
}
