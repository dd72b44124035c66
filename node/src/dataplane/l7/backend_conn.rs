//! Connections from this node to backends for HTTP: a [`Sender`] (our
//! HTTP/1.1 client, [`H1Conn`], or hyper's HTTP/2 client) over a
//! [`Transport`] (TCP, or TLS when the pool says so), opened by
//! [`handshake`], and the keep-alive pools of idle ones. Idle connections
//! are kept per worker thread ([`take_idle`], [`put_idle`]): a connection's
//! socket is registered with the worker that opened it, so reusing it
//! there keeps each request on one thread, with no lock at all. A pool
//! with `proxy_protocol` starts each connection with a PROXY header (before
//! TLS) naming the client it was opened for, and such a connection is
//! reused for that client connection alone (HAProxy does the same). Which
//! backend to open one to is [`upstream`](crate::dataplane::upstream)'s.

use super::h1_client::{BackendError, H1Conn, ResponseBody, SendError};
use super::request_body::RequestBody;
use super::retry;
use crate::dataplane::proxy_protocol::{self, Origin};
use crate::dataplane::upstream::{ConnectError, connect_one};
use crate::view::PoolView;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::http2;
use raftlb_config::BackendProtocol;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection to a backend: HTTP/1.1 with keep-alive (one request at a
/// time, driven by the request's task: [`H1Conn`]), or HTTP/2 (requests
/// multiplexed by hyper's client; the idle pool keeps it listed while it
/// is in use, so every request of this worker shares it).
#[derive(Debug)]
pub enum Sender {
    Http1(H1Conn),
    Http2(http2::SendRequest<RequestBody>),
}

/// A backend's response body, as its connection delivers it.
#[derive(Debug)]
pub enum BackendBody {
    /// From our HTTP/1.1 client, whose connection is reused after it.
    Http1(ResponseBody),
    /// From hyper's client: an HTTP/2 stream's, or a refused upgrade's
    /// (its HTTP/1.1 connection is not reused).
    Hyper(Incoming),
}

impl Sender {
    /// Whether the backend has closed the connection (for HTTP/1.1, one
    /// read attempt that does not wait).
    pub fn is_closed(&mut self) -> bool {
        match self {
            Sender::Http1(conn) => !conn.is_open(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::Http1(_) => Ok(()),
            Sender::Http2(s) => s.ready().await,
        }
    }

    /// Sends `request` and returns the response head with its body to
    /// come. The request stays the caller's: HTTP/1.1 only reads it (a body
    /// still arriving is taken, leaving it spent); HTTP/2 takes it, or a
    /// copy of it when `keep` asks for the original to stay whole.
    pub async fn send(
        self,
        request: &mut Request<RequestBody>,
        keep: bool,
    ) -> Result<Response<BackendBody>, SendError> {
        match self {
            Sender::Http1(conn) => {
                let (response, body) = conn.send(request).await?;
                Ok(response.map(|()| BackendBody::Http1(body)))
            }
            Sender::Http2(mut sender) => {
                let copy = keep.then(|| retry::copy(request)).flatten();
                let copied = copy.is_some();
                let outgoing =
                    copy.unwrap_or_else(|| std::mem::replace(request, Request::new(RequestBody::spent())));
                match sender.try_send_request(outgoing).await {
                    Ok(response) => Ok(response.map(BackendBody::Hyper)),
                    Err(mut e) => {
                        let message = e.take_message();
                        let unsent = message.is_some();
                        if let Some(message) = message.filter(|_| !copied) {
                            *request = message;
                        }
                        let error = BackendError::Http2(e.into_error());
                        Err(SendError { error, unsent })
                    }
                }
            }
        }
    }
}

/// Most idle connections kept per backend per worker.
const MAX_IDLE: usize = 256;
/// Idle connections older than this are closed rather than reused, to stay
/// clear of backends' own keep-alive timeouts (Apache and Node.js: 5 s).
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);

/// Idle connections are kept by backend address, whether they are TLS,
/// and the client connection they were opened for if their PROXY header
/// names it.
type IdleKey = (SocketAddr, bool, Option<u64>);

thread_local! {
    static IDLE: RefCell<HashMap<IdleKey, Vec<(Sender, Instant)>>> = RefCell::new(HashMap::new());
}

/// The client connection whose backend connections to `pool` are its own:
/// `origin`'s, if the pool sends PROXY headers.
fn owner(pool: &PoolView, origin: Option<&Origin>) -> Option<u64> {
    pool.spec.proxy_protocol.and(origin).map(|origin| origin.id)
}

/// The most recently used open idle connection to `backend`, a backend of
/// `pool`, on this worker that may carry `origin`'s requests.
pub fn take_idle(backend: SocketAddr, pool: &PoolView, origin: &Origin) -> Option<Sender> {
    let now = Instant::now();
    let key = (backend, pool.tls.is_some(), owner(pool, Some(origin)));
    IDLE.with_borrow_mut(|idle| {
        let list = idle.get_mut(&key)?;
        while let Some((mut sender, since)) = list.pop() {
            if now.duration_since(since) >= MAX_IDLE_AGE || sender.is_closed() {
                continue;
            }
            if let Sender::Http2(shared) = &sender {
                // Multiplexed: stays listed for the next request.
                list.push((Sender::Http2(shared.clone()), now));
            }
            return Some(sender);
        }
        None
    })
}

/// Keeps a connection whose last response was fully read, for reuse on this worker.
pub fn put_idle(backend: SocketAddr, tls: bool, sender: Sender) {
    // An HTTP/2 connection never left the list.
    let Sender::Http1(conn) = &sender else {
        return;
    };
    let key = (backend, tls, conn.owner());
    IDLE.with_borrow_mut(|idle| {
        let list = idle.entry(key).or_default();
        if list.len() >= MAX_IDLE {
            list.remove(0);
        }
        list.push((sender, Instant::now()));
    });
}

/// Closes, every half [`MAX_IDLE_AGE`], this worker's idle connections
/// that are too old to be reused or that their backend has closed. Idle
/// HTTP/1.1 connections have no task watching them, so without this a
/// backend's close would leave the socket half-closed until the next
/// request to that backend. Runs for the worker's life.
pub async fn sweep_idle() {
    loop {
        tokio::time::sleep(MAX_IDLE_AGE / 2).await;
        let now = Instant::now();
        IDLE.with_borrow_mut(|idle| {
            for list in idle.values_mut() {
                list.retain_mut(|(sender, since)| {
                    now.duration_since(*since) < MAX_IDLE_AGE && !sender.is_closed()
                });
            }
            idle.retain(|_, list| !list.is_empty());
        });
    }
}

/// Opens a new connection to `address`, a backend of `pool` (HTTP/1.1 or
/// HTTP/2 as the pool says, over TLS if it says so, the handshake within the
/// connect timeout too); an HTTP/2 connection's driver task is spawned on
/// this worker.
///
/// The work is boxed: connecting (a TLS client state above all) is a future
/// of about 6.7 KB, which every request's future would otherwise carry
/// (making it 11 KB, copied whole when an HTTP/2 stream's task is spawned
/// and when an HTTP/1 request starts) although most requests take an idle
/// connection and never get here.
pub async fn handshake(
    address: SocketAddr,
    pool: &PoolView,
    origin: &Origin,
) -> Result<Sender, ConnectError> {
    Box::pin(open(address, pool, origin)).await
}

async fn open(address: SocketAddr, pool: &PoolView, origin: &Origin) -> Result<Sender, ConnectError> {
    let h2 = pool.spec.backend_protocol == BackendProtocol::H2;
    match connect_transport(address, pool, Some(origin)).await? {
        Transport::Plain(io) if h2 => http2(address, io).await,
        Transport::Tls(io) if h2 => http2(address, *io).await,
        transport => Ok(Sender::Http1(
            H1Conn::new(transport).owned_by(owner(pool, Some(origin))),
        )),
    }
}

/// An HTTP/1.1 connection whatever the pool's protocol: what an `Upgrade`
/// (WebSocket) needs, for `origin`'s client, and a health check, for no
/// one (`None`). Over TLS when the pool says so. Boxed, as [`handshake`].
pub async fn handshake_http1(
    address: SocketAddr,
    pool: &PoolView,
    origin: Option<&Origin>,
) -> Result<SendRequest<RequestBody>, ConnectError> {
    Box::pin(async move {
        match connect_transport(address, pool, origin).await? {
            Transport::Plain(io) => http1(address, io).await,
            Transport::Tls(io) => http1(address, *io).await,
        }
    })
    .await
}

/// A connected stream to a backend, TLS or not.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(io) => io.is_write_vectored(),
            Transport::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_flush(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// TCP to `address`, the pool's PROXY header naming `origin`'s client (or
/// no one), then TLS if the pool says so, each within the pool's connect
/// timeout.
async fn connect_transport(
    address: SocketAddr,
    pool: &PoolView,
    origin: Option<&Origin>,
) -> Result<Transport, ConnectError> {
    let timeout = pool.spec.connect_timeout;
    let mut stream = connect_one(address, timeout).await?;
    let io_error = |source| ConnectError::Io { address, source };
    if let Some(version) = pool.spec.proxy_protocol {
        proxy_protocol::send(&mut stream, version, origin)
            .await
            .map_err(io_error)?;
    }
    match &pool.tls {
        None => Ok(Transport::Plain(stream)),
        Some(Err(reason)) => Err(io_error(io::Error::other(format!(
            "TLS to backends unavailable: {reason}"
        )))),
        Some(Ok(connector)) => {
            let tls = tokio::time::timeout(timeout, connector.connect(stream, address))
                .await
                .map_err(|_| ConnectError::Timeout { address, timeout })?
                .map_err(|e| io_error(io::Error::other(format!("TLS handshake: {e}"))))?;
            Ok(Transport::Tls(Box::new(tls)))
        }
    }
}

/// HTTP/2 over `io` (prior knowledge, or ALPN `h2` already agreed), its
/// driver spawned on this worker.
async fn http2<I>(address: SocketAddr, io: I) -> Result<Sender, ConnectError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Io {
            address,
            source: io::Error::other(e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%address, error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Sender::Http2(sender))
}

/// HTTP/1.1 in the clear over a connected `stream` (GSLB site probes).
pub async fn http1_over(
    address: SocketAddr,
    stream: TcpStream,
) -> Result<SendRequest<RequestBody>, ConnectError> {
    http1(address, stream).await
}

/// HTTP/1.1 over `io`, its driver spawned on this worker.
async fn http1<I>(address: SocketAddr, io: I) -> Result<SendRequest<RequestBody>, ConnectError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(256 * 1024)
        .handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Io {
            address,
            source: io::Error::other(e),
        })?;
    tokio::spawn(async move {
        // With upgrades: a `101` hands the connection to a tunnel.
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%address, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}
