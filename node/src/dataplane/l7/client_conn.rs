//! What one HTTP/2 client connection's bytes and requests say about it,
//! shared by its stream ([`Watched`]), its requests ([`InFlight`]) and its
//! idle watch ([`idle`]). (HTTP/1 connections are timed by their own
//! server, [`h1_server`](super::h1_server); they share [`ConnWatch`] for
//! their gauges and refusals.)
//!
//! - **Head timeout.** [`Watched`] follows the client's bytes below hyper
//!   with a [`FrameFollower`]: a request head (the preface, a header
//!   block, or any frame's 9-byte header) must arrive whole within the
//!   listener's `header_read_timeout`: a total, counted from the
//!   connection's start for the preface and from a head's first byte after
//!   that, however slowly the bytes come. Expiry fails the read, so hyper
//!   drops the connection without an answer.
//! - **Send timeout.** Writes to the client that make no progress for the
//!   listener's `send_timeout` fail ([`SendClock`]), closing the
//!   connection (the stream is below hyper, above TLS).
//! - **Keep-alive idle.** A connection with no request in flight and no
//!   head arriving is idle; [`idle`] resolves once it has been idle for the
//!   listener's `keepalive_timeout`, and the server then sends GOAWAY. A
//!   request counts as in flight from the service call until its response
//!   body is dropped ([`Tracked`] holds its [`InFlight`]). The watch is
//!   lazy: requests only stamp the time they start and end, and [`idle`]
//!   wakes once per timeout to compare, so a busy connection pays no timer
//!   and no wake-up per request.
//!
//! Head and send timeouts are counted as refusals of the listener
//! (`header_timeout`, `send_timeout`).

use super::h2_frames::FrameFollower;
use super::send_clock::SendClock;
use crate::access_log::Record;
use crate::dataplane::admission::{ListenerGuard, Refusal};
use crate::dataplane::traffic::Open;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// One client connection's shared state (see the module doc).
#[derive(Debug)]
pub struct ConnWatch {
    /// Requests whose response body has not been dropped.
    in_flight: AtomicU64,
    /// Part of a head has arrived.
    head_arriving: AtomicBool,
    /// When the connection started.
    born: Instant,
    /// When a head or request last started or a request ended, in
    /// nanoseconds after `born`.
    last_activity_ns: AtomicU64,
    /// Where the connection's refusals are counted.
    listener: Arc<ListenerGuard>,
    /// The connection in its listener's gauges: active while a request is
    /// in flight, else idle (`None`: its listener has gone).
    open: Option<Open>,
}

impl ConnWatch {
    /// A connection of the listener `listener` guards, started at `born`,
    /// counted in its traffic as `open`.
    pub fn new(listener: Arc<ListenerGuard>, born: Instant, open: Option<Open>) -> Self {
        ConnWatch {
            in_flight: AtomicU64::new(0),
            head_arriving: AtomicBool::new(false),
            born,
            last_activity_ns: AtomicU64::new(0),
            listener,
            open,
        }
    }

    /// When the connection started (accepted).
    pub fn born(&self) -> Instant {
        self.born
    }

    /// A request has started; it is in flight until the guard drops.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        if self.in_flight.fetch_add(1, Relaxed) == 0
            && let Some(open) = &self.open
        {
            open.set_active(true);
        }
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// Counts a refusal of this connection's client.
    pub fn refused(&self, reason: Refusal) {
        self.listener.count(reason);
    }

    /// Stamps activity now.
    fn touch(&self) {
        self.last_activity_ns
            .store(self.born.elapsed().as_nanos() as u64, Relaxed);
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Relaxed) == 0 && !self.head_arriving.load(Relaxed)
    }
}

/// Resolves once the connection has been idle (see the module doc) for
/// `timeout`: from the end of its last response, or from its preface.
pub async fn idle(watch: &ConnWatch, timeout: Duration) {
    let mut deadline = watch.born + timeout;
    loop {
        tokio::time::sleep_until(deadline).await;
        let last = watch.born + Duration::from_nanos(watch.last_activity_ns.load(Relaxed));
        let idle = watch.is_idle();
        if idle && Instant::now() >= last + timeout {
            return;
        }
        // Idle since `last`: due then; busy: look again a timeout from now.
        deadline = match idle {
            true => last + timeout,
            false => Instant::now() + timeout,
        };
    }
}

/// A request in flight (see [`ConnWatch::request_started`]).
#[derive(Debug)]
pub struct InFlight(Arc<ConnWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.in_flight.fetch_sub(1, Relaxed) == 1
            && let Some(open) = &self.0.open
        {
            open.set_active(false);
        }
    }
}

/// A response body that keeps its request in flight, and the backend
/// stream it holds taken, until it is dropped; then its request's record
/// is finished, with the body bytes sent.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
    _backend_stream: Option<OwnedSemaphorePermit>,
    record: Option<Record>,
    sent: u64,
}

impl<B> Tracked<B> {
    pub fn new(
        body: B,
        in_flight: InFlight,
        backend_stream: Option<OwnedSemaphorePermit>,
        record: Option<Record>,
    ) -> Self {
        Tracked {
            body,
            _in_flight: in_flight,
            _backend_stream: backend_stream,
            record,
            sent: 0,
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.sent = self.sent;
            record.finish();
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An HTTP/2 client stream whose reads and writes are followed (see the
/// module doc).
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    watch: Arc<ConnWatch>,
    frames: FrameFollower,
    header_timeout: Duration,
    /// When the head being awaited started (its time runs from there).
    head_started: Instant,
    /// A timer at or before `head_started + header_timeout`, moved there
    /// only when it fires early: a head that arrives whole in one read
    /// (the usual case) costs no timer operation.
    deadline: Pin<Box<Sleep>>,
    timing: bool,
    send: SendClock,
    /// The send timeout has been counted (once a connection).
    send_counted: bool,
}

impl<S> Watched<S> {
    /// Wraps a new connection's stream, from its first byte (the
    /// preface's); the preface's time runs from the connection's start
    /// (`watch`'s birth).
    pub fn new(inner: S, watch: Arc<ConnWatch>, header_timeout: Duration, send_timeout: Duration) -> Self {
        let head_started = watch.born;
        Watched {
            inner,
            watch,
            frames: FrameFollower::after(0),
            header_timeout,
            head_started,
            deadline: Box::pin(tokio::time::sleep_until(head_started + header_timeout)),
            timing: true,
            send: SendClock::new(send_timeout),
            send_counted: false,
        }
    }

    /// Follows `read`, bytes just read from the client.
    fn follow(&mut self, read: &[u8]) {
        let finished = self.frames.finished();
        self.frames.feed(read);
        let (arriving, began) = (self.frames.mid_head(), self.frames.finished() != finished);
        if arriving && (began || !self.timing) {
            self.head_started = Instant::now();
            self.timing = true;
            self.watch.touch();
        } else if !arriving {
            self.timing = false;
        }
        if arriving != self.watch.head_arriving.load(Relaxed) {
            self.watch.head_arriving.store(arriving, Relaxed);
        }
    }

    /// `Pending` from the stream: is the head late?
    fn head_late(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.timing {
            return false;
        }
        let due = self.head_started + self.header_timeout;
        while self.deadline.as_mut().poll(cx).is_ready() {
            if Instant::now() >= due {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
        false
    }

    /// Follows a polled write, flush or shutdown with the send clock.
    fn sent<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let followed = self.send.follow(cx, polled);
        if self.send.expired() && !self.send_counted {
            self.send_counted = true;
            self.watch.refused(Refusal::SendTimeout);
        }
        followed
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.follow(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.head_late(cx) => {
                this.timing = false;
                this.watch.refused(Refusal::HeaderTimeout);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("request head not received within {:?}", this.header_timeout),
                )))
            }
            polled => polled,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.sent(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.sent(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.sent(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.sent(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Real time, with margins far wider than a slow machine's jitter.
    const TIMEOUT: Duration = Duration::from_millis(300);

    fn connection() -> (
        Arc<ListenerGuard>,
        Arc<ConnWatch>,
        DuplexStream,
        Watched<DuplexStream>,
    ) {
        let guard = Arc::new(ListenerGuard::default());
        let watch = Arc::new(ConnWatch::new(Arc::clone(&guard), Instant::now(), None));
        let (client, server) = tokio::io::duplex(4096);
        let watched = Watched::new(server, Arc::clone(&watch), TIMEOUT, Duration::from_secs(60));
        (guard, watch, client, watched)
    }

    #[tokio::test]
    async fn a_head_trickled_byte_by_byte_is_cut_at_its_total_deadline() {
        let (guard, _watch, mut client, mut watched) = connection();
        let started = Instant::now();
        // 40 bytes, one every tenth of the timeout: still coming at 4 × the timeout.
        let trickle = tokio::spawn(async move {
            for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x04\x01\x04\0\0\0" {
                if client.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(TIMEOUT / 10).await;
            }
            client
        });
        let mut buf = [0u8; 64];
        let error = loop {
            match watched.read(&mut buf).await {
                Ok(n) => assert!(n > 0, "the trickle ended before the deadline"),
                Err(e) => break e,
            }
        };
        let after = started.elapsed();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(after >= TIMEOUT && after < TIMEOUT * 3, "cut after {after:?}");
        assert_eq!(guard.refused(Refusal::HeaderTimeout), 1);
        trickle.abort();
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_fails_the_write_after_the_send_timeout() {
        let guard = Arc::new(ListenerGuard::default());
        let watch = Arc::new(ConnWatch::new(Arc::clone(&guard), Instant::now(), None));
        let (_client, server) = tokio::io::duplex(1024);
        let mut watched = Watched::new(server, watch, Duration::from_secs(60), TIMEOUT);
        let started = Instant::now();
        let chunk = [0u8; 4096];
        let written = tokio::time::timeout(TIMEOUT * 10, async {
            loop {
                if let Err(e) = watched.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await;
        let error = written.expect("the write failed in time");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= TIMEOUT);
        assert_eq!(guard.refused(Refusal::SendTimeout), 1);
    }
}
