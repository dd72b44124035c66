//! Copying bytes both ways between two streams until both have closed, with
//! half-closes passed on and an idle limit: the body of an L4 TCP
//! connection and of an upgraded HTTP connection (WebSocket) alike. When a
//! drain's time is up, both sides get a FIN, and what they still send is
//! read and dropped for up to [`LINGER`]: a socket closed with unread bytes
//! would send a reset instead, and a WebSocket client would see an error
//! rather than the end of the connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

/// How long a stopped splice waits for both sides to close after its FINs.
pub const LINGER: Duration = Duration::from_millis(300);

/// Copies both ways until both sides have closed, until nothing has moved
/// for `idle`, or until `deadline` (then closes both, see the module doc).
/// Returns bytes sent client→backend and backend→client.
pub async fn splice<C, B>(
    client: C,
    backend: B,
    idle: Duration,
    deadline: &CancellationToken,
) -> io::Result<(u64, u64)>
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
    let ended = {
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
            copied = copy => Some(copied),
            () = watchdog => Some(Err(io::Error::new(io::ErrorKind::TimedOut, format!("idle for {idle:?}")))),
            () = deadline.cancelled() => None,
        }
    };
    match ended {
        Some(ended) => ended,
        None => {
            let _ = tokio::time::timeout(LINGER, close(&mut client.inner, &mut backend.inner)).await;
            Err(io::Error::other("the drain's time is up"))
        }
    }
}

/// Sends a FIN both ways, then reads and drops until both sides close.
async fn close<C, B>(client: &mut C, backend: &mut B)
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::join!(client.shutdown(), backend.shutdown());
    let _ = tokio::join!(discard(client), discard(backend));
}

/// Reads until end of stream or an error.
async fn discard<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
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
