//! The HTTP side facing clients: one hyper connection per accepted socket,
//! HTTP/1.1 or HTTP/2 with prior knowledge (told apart by the connection
//! preface), with the listener's limits set explicitly: head size and header
//! count (431 beyond them; HTTP/2: the header list size), head read, send
//! and keep-alive idle timeouts ([`client_conn`]), and the streams of one
//! connection at backends at once ([`ConnContext::backend_streams`]).
//! Malformed requests are answered 400 by hyper's
//! parser; framing hyper lets through but a proxy must not pass on is
//! answered here before any backend sees it: 400 for `Content-Length`
//! beside `Transfer-Encoding` ([`framing`]), 501 for a transfer coding
//! other than `chunked` (which could not be passed on, since bodies are
//! re-framed). On shutdown an HTTP/1 connection answers its next request
//! with `Connection: close` (an idle one is closed after a second), so no
//! request on its way is cut off; HTTP/2 gets GOAWAY.

use super::body::ProxyBody;
use super::client_conn::{self, ConnWatch, Framing, Tracked, Watched};
use super::framing::{self, Coding};
use super::headers::{Claims, Forwarding};
use super::proxy::{self, ConnContext};
use crate::access_log::{Record, TlsInfo};
use crate::dataplane::Shutdown;
use crate::dataplane::admission::Admitted;
use crate::dataplane::proxy_protocol::Origin;
use crate::view::SharedView;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use raftlb_config::HttpLimits;
use raftlb_config::limits::MAX_CONCURRENT_STREAMS;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Streams a client may reset before they are served, at once.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset for a client's protocol errors, in all.
const MAX_LOCAL_ERROR_RESETS: usize = 100;
/// How long a draining HTTP/1 connection with no request in flight waits
/// for its client's next request (answered, with `Connection: close`):
/// closing it at once would race a request already on its way.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// What a connection's requests tell its drain, and the drain them.
#[derive(Debug, Default)]
struct Draining {
    /// Set when the node drains: HTTP/1 responses say `Connection: close`.
    closing: AtomicBool,
    /// An HTTP/2 request was seen: the drain sends GOAWAY at once.
    h2: AtomicBool,
}

/// What every connection of one HTTP listener shares.
#[derive(Debug)]
pub struct HttpListener {
    name: String,
    view: SharedView,
    /// `http` or `https`, for `X-Forwarded-Proto` and `Forwarded`.
    scheme: &'static str,
    builder: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    send_timeout: Duration,
    max_backend_streams: usize,
    /// Whose forwarding headers are believed (`None`: everyone's).
    trusted_proxies: Option<Vec<raftlb_config::Cidr>>,
}

impl HttpListener {
    pub fn new(name: &str, limits: &HttpLimits, view: SharedView, scheme: &'static str) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Timed by `Watched` instead (see `client_conn`).
            .header_read_timeout(None)
            // Also the largest head: hyper answers 431 beyond it.
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            // The head limit, announced (SETTINGS_MAX_HEADER_LIST_SIZE)
            // and enforced: a larger header list gets 431.
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // Rapid reset (CVE-2023-44487): a client that resets streams
            // faster than they are served, or makes the server reset them,
            // gets GOAWAY (ENHANCE_YOUR_CALM) and the connection closes.
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS);
        HttpListener {
            name: name.to_string(),
            view,
            scheme,
            builder,
            header_read_timeout: limits.header_read_timeout,
            keepalive_timeout: limits.keepalive_timeout,
            send_timeout: limits.send_timeout,
            max_backend_streams: limits.max_backend_streams as usize,
            trusted_proxies: limits.trusted_proxies.clone(),
        }
    }

    /// Serves one client connection, accepted at `accepted` (the first
    /// head's time runs from there, TLS handshake included), until it
    /// closes or shutdown drains it.
    pub async fn serve<S>(
        self: Arc<Self>,
        stream: S,
        origin: Origin,
        admitted: Admitted,
        shutdown: Shutdown,
        accepted: Instant,
        tls: Option<TlsInfo>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let open = self
            .view
            .load()
            .listener(&self.name)
            .map(|l| l.traffic.open(false));
        let watch = Arc::new(ConnWatch::new(Arc::clone(admitted.listener()), accepted, open));
        let client = origin.client;
        let claims = Claims::of(self.trusted_proxies.as_deref(), client.ip());
        let context = Arc::new(ConnContext {
            listener: self.name.clone(),
            client,
            origin,
            tls,
            forwarding: Forwarding::new(client, self.scheme, claims),
            view: Arc::clone(&self.view),
            tunnels: shutdown.tracker.clone(),
            drain_deadline: shutdown.deadline.clone(),
            admitted,
            backend_streams: Arc::new(Semaphore::new(self.max_backend_streams)),
        });
        let stream = Watched::new(
            stream,
            Arc::clone(&watch),
            self.header_read_timeout,
            self.send_timeout,
        );
        let draining = Arc::new(Draining::default());
        let service = {
            let (watch, draining) = (Arc::clone(&watch), Arc::clone(&draining));
            service_fn(move |request| {
                let (context, watch) = (Arc::clone(&context), Arc::clone(&watch));
                let draining = Arc::clone(&draining);
                // Boxed: hyper keeps a slot the size of the service's
                // future for the connection's whole life, and a request's
                // future (the proxying, its retries and its backend I/O)
                // runs to several kilobytes. Boxed, an idle keep-alive
                // connection holds a pointer instead, and the request's
                // state is freed when its response head goes out.
                Box::pin(async move {
                    let (in_flight, index) = watch.request_started();
                    let h1 = request.version() < Version::HTTP_2;
                    if !h1 {
                        draining.h2.store(true, Relaxed);
                    }
                    let (mut response, stream, record) =
                        serve_request(request, context, watch.framing(index)).await;
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        watch.tunnel();
                    } else if h1 && draining.closing.load(Relaxed) {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    let record = record.map(|mut record| {
                        record.status = Some(response.status().as_u16());
                        record
                    });
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight, stream, record)))
                })
            })
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.token.cancelled() => {
                // HTTP/2: GOAWAY at once (a client retries the streams it
                // names unprocessed). HTTP/1: the next response closes the
                // connection; one left idle is closed after `DRAIN_IDLE`.
                draining.closing.store(true, Relaxed);
                let ended = match draining.h2.load(Relaxed) {
                    true => None,
                    false => tokio::select! {
                        result = connection.as_mut() => Some(result),
                        () = client_conn::idle(&watch, DRAIN_IDLE.min(self.keepalive_timeout)) => None,
                    },
                };
                match ended {
                    Some(result) => result,
                    None => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                }
            }
            () = client_conn::idle(&watch, self.keepalive_timeout) => {
                tracing::debug!(listener = %self.name, %client, "closing an idle connection");
                connection.as_mut().graceful_shutdown();
                // HTTP/2 closes once the client acknowledges the GOAWAY's
                // PING; one that never does is given a head's time.
                let closed = tokio::time::timeout(self.header_read_timeout, connection).await;
                closed.unwrap_or_else(|_| {
                    tracing::debug!(listener = %self.name, %client, "idle connection did not close; dropped");
                    Ok(())
                })
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = %self.name, %client, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// One request's response, the backend stream its body holds, and its
/// record (none when the listener has just gone from the view: 503).
async fn serve_request(
    mut request: Request<Incoming>,
    context: Arc<ConnContext>,
    framing: Framing,
) -> (Response<ProxyBody>, Option<OwnedSemaphorePermit>, Option<Record>) {
    let Some(listener) = context.view.load().listener(&context.listener).cloned() else {
        let gone = proxy::local(StatusCode::SERVICE_UNAVAILABLE, "no route for this listener\n");
        return (gone, None, None);
    };
    let mut record = Record::http(listener, context.client, context.tls.clone(), &mut request);
    let (response, stream) = match refusal(&request, framing) {
        Some(refusal) => (refusal, None),
        None => proxy::handle(request, context, &mut record).await,
    };
    (response, stream, Some(record))
}

/// The local answer for a request whose framing must not be passed on, if
/// it is one; the connection closes after it, its body unread.
fn refusal(request: &Request<Incoming>, framing: Framing) -> Option<Response<ProxyBody>> {
    let (status, text) = match framing {
        Framing::Conflict => (
            StatusCode::BAD_REQUEST,
            "Content-Length and Transfer-Encoding together\n",
        ),
        Framing::Unknown => (StatusCode::BAD_REQUEST, "request framing not understood\n"),
        Framing::Sound => match framing::transfer_coding(request.headers()) {
            Coding::None | Coding::Chunked => return None,
            Coding::Twice => (StatusCode::BAD_REQUEST, "chunked applied more than once\n"),
            Coding::Other => (
                StatusCode::NOT_IMPLEMENTED,
                "only the chunked transfer coding is supported\n",
            ),
        },
    };
    let mut response = proxy::local(status, text);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(response)
}
