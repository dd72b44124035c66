//! Copying bytes both ways between two streams until both have closed, with
//! half-closes passed on and an idle limit: the body of an L4 TCP
//! connection and of an upgraded HTTP connection (WebSocket) alike.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Copies both ways until both sides have closed, or until nothing has moved
/// for `idle`. Returns bytes sent client→backend and backend→client.
pub async fn splice<C, B>(client: C, backend: B, idle: Duration) -> io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
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
struct Counted<'a, S> {
    inner: S,
    activity: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
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
