//! TCP proxying: connect to a backend (the client's sticky session's first,
//! with `source_ip` stickiness; trying others on failure), then copy
//! bytes both ways. A half-close is passed on (EOF from one side shuts down
//! writing to the other while the reverse direction keeps flowing). A
//! connection with no bytes either way for the listener's idle timeout is
//! closed.

use crate::dataplane::upstream;
use crate::view::SharedView;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Serves one accepted client connection to its end.
pub async fn serve(client: TcpStream, peer: SocketAddr, listener: &str, view: &SharedView) {
    let Some(route) = view.load().listener(listener).cloned() else {
        return;
    };
    let Some(pool) = &route.pool else { return };
    let affinity = pool
        .sticky
        .as_ref()
        .map(|sticky| sticky.by_source(peer.ip(), |b| pool.keeps_sessions(b)));
    let preferred = affinity.as_ref().and_then(|a| a.preferred);
    let (backend, guard) = match upstream::connect(pool, preferred).await {
        Ok(connected) => connected,
        Err(e) => {
            tracing::warn!(listener, client = %peer, error = %e, "no backend for TCP connection");
            return;
        }
    };
    let address = guard.backend().address();
    if let (Some(sticky), Some(affinity)) = (&pool.sticky, &affinity)
        && let Some(commit) = sticky.settle(affinity, address).commit
        && let Err(reason) = commit.await
    {
        // `sync`: a session the client sees must be committed.
        tracing::warn!(listener, client = %peer, %reason, "sticky session not committed; connection closed");
        return;
    }
    match splice(client, backend, route.spec.idle_timeout).await {
        Ok((up, down)) => {
            tracing::debug!(listener, client = %peer, backend = %address, up, down, "TCP connection closed")
        }
        Err(e) => {
            tracing::debug!(listener, client = %peer, backend = %address, error = %e, "TCP connection ended")
        }
    }
}

/// Copies both ways until both sides have closed, or until nothing has moved
/// for `idle`. Returns bytes sent client→backend and backend→client.
async fn splice(client: TcpStream, backend: TcpStream, idle: Duration) -> io::Result<(u64, u64)> {
    let activity = AtomicU64::new(0);
    let mut client = Counted {
        inner: client,
        activity: &activity,
    };
    let mut backend = Counted {
        inner: backend,
        activity: &activity,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    let watchdog = async {
        // Closes after between `idle` and 1.5 × `idle` of silence.
        let tick = idle / 2;
        let mut last = activity.load(Ordering::Relaxed);
        let mut quiet_ticks = 0;
        loop {
            tokio::time::sleep(tick).await;
            let now = activity.load(Ordering::Relaxed);
            quiet_ticks = if now == last { quiet_ticks + 1 } else { 0 };
            last = now;
            if quiet_ticks >= 2 {
                return;
            }
        }
    };
    tokio::select! {
        copied = copy => copied,
        () = watchdog => Err(io::Error::new(io::ErrorKind::TimedOut, format!("idle for {idle:?}"))),
    }
}

/// A stream that counts reads, so a watchdog can tell silence from traffic
/// without reading the clock on every read.
struct Counted<'a> {
    inner: TcpStream,
    activity: &'a AtomicU64,
}

impl AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
