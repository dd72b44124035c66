//! What one client connection's bytes and requests say about it, shared by
//! its stream ([`Watched`]), its requests ([`InFlight`]) and its idle
//! watch ([`idle`]):
//!
//! - **Framing.** [`Watched`] wraps the client stream and feeds every byte
//!   hyper reads through a [`HeadScanner`] (HTTP/1 only: it stops at an
//!   HTTP/2 preface and when an upgrade's `101` goes out). Request n asks
//!   [`ConnWatch::framing`] whether head n was checked and sound. After an
//!   HTTP/2 preface, a [`FrameFollower`] finds the header blocks instead.
//! - **Head timeout.** A request head (HTTP/2: a header block, or any
//!   frame's 9-byte header) must arrive whole within the listener's
//!   `header_read_timeout`: a total, counted from the connection's start
//!   for the first request and from a head's first byte after that,
//!   however slowly the bytes come. HTTP/1: hyper reads no further while a
//!   response is going out, so a head that began meanwhile is judged when
//!   the response ends (at once, if its time is up). Expiry fails the
//!   read, so hyper drops the connection without an answer, as its own
//!   header timeout did. hyper's timeout is off: it also ran while a
//!   keep-alive connection sat idle between requests, so idle time and
//!   head time were one setting.
//! - **Send timeout.** Writes to the client that make no progress for the
//!   listener's `send_timeout` fail ([`SendClock`]), closing the
//!   connection, HTTP/1 or HTTP/2 (the stream is below hyper, above TLS).
//! - **Keep-alive idle.** A connection with no request in flight and no
//!   head arriving is idle; [`idle`] resolves once it has been idle for the
//!   listener's `keepalive_timeout`, and the server then shuts it down
//!   gracefully (HTTP/1: closed; HTTP/2: GOAWAY). A request counts as in
//!   flight from the service call until its response body is dropped
//!   ([`Tracked`] holds its [`InFlight`]). The watch is lazy: requests only
//!   stamp the time they start and end, and [`idle`] wakes once per
//!   timeout to compare, so a busy keep-alive connection pays no timer
//!   and no wake-up per request.
//!
//! Head and send timeouts are counted as refusals of the listener
//! (`header_timeout`, `send_timeout`).

use super::framing::{HeadScanner, Stop};
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

/// No conflicting head.
const NONE: u64 = u64::MAX;

/// One client connection's shared state (see the module doc).
#[derive(Debug)]
pub struct ConnWatch {
    /// Requests whose response body has not been dropped.
    in_flight: AtomicU64,
    /// Requests started, the index of the next one.
    requests: AtomicU64,
    /// HTTP/1: requests with a lower index had their heads checked.
    checked: AtomicU64,
    /// HTTP/1: the index of a head with both `Content-Length` and
    /// `Transfer-Encoding`, else [`NONE`].
    conflict: AtomicU64,
    http2: AtomicBool,
    /// An upgrade's `101` went out: the connection is a tunnel now.
    tunnel: AtomicBool,
    /// HTTP/1: part of a head has arrived.
    head_arriving: AtomicBool,
    /// When the connection started.
    born: Instant,
    /// When a head, request or HTTP/2 last started or a request ended, in
    /// nanoseconds after `born`.
    last_activity_ns: AtomicU64,
    /// Where the connection's refusals are counted.
    listener: Arc<ListenerGuard>,
    /// The connection in its listener's gauges: active while a request is
    /// in flight, else idle (`None`: its listener has gone).
    open: Option<Open>,
}

/// What the service should make of a request's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sound,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Conflict,
    /// Not followed: refused, failing closed.
    Unknown,
}

impl ConnWatch {
    /// A connection of the listener `listener` guards, started at `born`,
    /// counted in its traffic as `open`.
    pub fn new(listener: Arc<ListenerGuard>, born: Instant, open: Option<Open>) -> Self {
        ConnWatch {
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            conflict: AtomicU64::new(NONE),
            http2: AtomicBool::new(false),
            tunnel: AtomicBool::new(false),
            head_arriving: AtomicBool::new(false),
            born,
            last_activity_ns: AtomicU64::new(0),
            listener,
            open,
        }
    }

    /// A request has started; it is in flight until the guard drops.
    /// Returns the guard and the request's index on the connection.
    pub fn request_started(self: &Arc<Self>) -> (InFlight, u64) {
        if self.in_flight.fetch_add(1, Relaxed) == 0
            && let Some(open) = &self.open
        {
            open.set_active(true);
        }
        self.touch();
        let index = self.requests.fetch_add(1, Relaxed);
        (InFlight(Arc::clone(self)), index)
    }

    /// The framing of request `index` as the client sent it.
    pub fn framing(&self, index: u64) -> Framing {
        if self.http2.load(Relaxed) {
            Framing::Sound
        } else if index == self.conflict.load(Relaxed) {
            Framing::Conflict
        } else if index < self.checked.load(Relaxed) {
            Framing::Sound
        } else {
            Framing::Unknown
        }
    }

    /// The connection has become a tunnel: stop reading it as HTTP.
    pub fn tunnel(&self) {
        self.tunnel.store(true, Relaxed);
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
        let started = self.http2.load(Relaxed) || self.requests.load(Relaxed) > 0;
        started
            && self.in_flight.load(Relaxed) == 0
            && !self.head_arriving.load(Relaxed)
            && !self.tunnel.load(Relaxed)
    }
}

/// Resolves once the connection has been idle (see the module doc) for
/// `timeout`: from the end of its last response, or for HTTP/2 from its
/// preface.
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

/// A client stream whose reads and writes are followed (see the module doc).
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    watch: Arc<ConnWatch>,
    scanner: HeadScanner,
    header_timeout: Duration,
    /// When the head being awaited started (its time runs from there).
    head_started: Instant,
    /// A timer at or before `head_started + header_timeout`, moved there
    /// only when it fires early: a head that arrives whole in one read
    /// (the usual case) costs no timer operation.
    deadline: Pin<Box<Sleep>>,
    timing: bool,
    /// Bytes read while HTTP/1 (where an HTTP/2 preface ends).
    read_total: u64,
    /// HTTP/2: its frames, followed instead of `scanner`.
    http2: Option<FrameFollower>,
    /// Not followed (any more): a tunnel, or framing lost. Reads pass
    /// straight through.
    through: bool,
    send: SendClock,
    /// The send timeout has been counted (once a connection).
    send_counted: bool,
}

impl<S> Watched<S> {
    /// Wraps a new connection's stream; the first head's time runs from
    /// the connection's start (`watch`'s birth).
    pub fn new(inner: S, watch: Arc<ConnWatch>, header_timeout: Duration, send_timeout: Duration) -> Self {
        let head_started = watch.born;
        Watched {
            inner,
            watch,
            scanner: HeadScanner::default(),
            header_timeout,
            head_started,
            deadline: Box::pin(tokio::time::sleep_until(head_started + header_timeout)),
            timing: true,
            read_total: 0,
            http2: None,
            through: false,
            send: SendClock::new(send_timeout),
            send_counted: false,
        }
    }

    /// Follows `read`, bytes just read from the client.
    fn follow(&mut self, read: &[u8]) {
        if self.http2.is_some() {
            return self.follow_http2(read);
        }
        let heads = self.scanner.heads();
        let read_before = self.read_total;
        self.read_total += read.len() as u64;
        self.scanner.feed(read);
        let watch = &self.watch;
        if self.scanner.heads() != heads {
            watch.checked.store(self.scanner.heads(), Relaxed);
        }
        if let Some(stop) = self.scanner.stopped() {
            match stop {
                Stop::Conflict => watch.conflict.store(self.scanner.heads(), Relaxed),
                Stop::Http2 => {
                    watch.http2.store(true, Relaxed);
                    watch.touch();
                    // The preface is the first head: its time runs on.
                    self.http2 = Some(FrameFollower::after(read_before));
                    return self.follow_http2(read);
                }
                Stop::Lost => {}
            }
            watch.head_arriving.store(false, Relaxed);
            self.through = true;
            self.timing = false;
            return;
        }
        let arriving = self.scanner.mid_head();
        self.time_head(arriving, self.scanner.heads() != heads);
    }

    /// [`follow`](Self::follow) for HTTP/2.
    fn follow_http2(&mut self, read: &[u8]) {
        let Some(frames) = self.http2.as_mut() else {
            return;
        };
        let finished = frames.finished();
        frames.feed(read);
        let (arriving, began) = (frames.mid_head(), frames.finished() != finished);
        self.time_head(arriving, began);
    }

    /// After a read: whether part of a head is here (`arriving`), and
    /// whether a new head began in it.
    fn time_head(&mut self, arriving: bool, began: bool) {
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
        if !this.through && this.watch.tunnel.load(Relaxed) {
            this.through = true;
            this.timing = false;
        }
        if this.through {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
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
            for byte in b"GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaa" {
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

    /// A pipelined head's first bytes read while a response goes out: the
    /// head's time runs meanwhile, whether or not the stream is read again
    /// before the response ends (it used to pause, and start over after).
    #[tokio::test]
    async fn a_head_begun_during_a_response_gets_no_more_time_after_it() {
        let (guard, watch, mut client, mut watched) = connection();
        let mut buf = [0u8; 64];
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(watched.read(&mut buf).await.expect("read") > 0);
        let (in_flight, _) = watch.request_started();
        client.write_all(b"GET /next HT").await.expect("write");
        assert_eq!(watched.read(&mut buf).await.expect("read"), 12);
        let early = tokio::time::timeout(TIMEOUT / 3, watched.read(&mut buf)).await;
        assert!(early.is_err(), "not late yet: {early:?}");
        tokio::time::sleep(TIMEOUT * 2).await;
        drop(in_flight);
        let ended = Instant::now();
        let read = tokio::time::timeout(TIMEOUT / 2, watched.read(&mut buf)).await;
        let error = read.expect("the late head is judged at once").expect_err("late");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(ended.elapsed() < TIMEOUT / 2);
        assert_eq!(guard.refused(Refusal::HeaderTimeout), 1);
    }

    #[tokio::test]
    async fn a_whole_pipelined_head_waits_out_a_long_response() {
        let (guard, watch, mut client, mut watched) = connection();
        let mut buf = [0u8; 128];
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(watched.read(&mut buf).await.expect("read") > 0);
        let (in_flight, _) = watch.request_started();
        client
            .write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(watched.read(&mut buf).await.expect("read") > 0);
        tokio::time::sleep(TIMEOUT * 2).await;
        drop(in_flight);
        let read = tokio::time::timeout(TIMEOUT * 2, watched.read(&mut buf)).await;
        assert!(read.is_err(), "nothing to read and nothing late: {read:?}");
        assert_eq!(guard.refused(Refusal::HeaderTimeout), 0);
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
