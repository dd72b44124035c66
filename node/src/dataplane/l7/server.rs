//! The HTTP side facing clients. A connection's first bytes say which
//! protocol it speaks: the HTTP/2 connection preface (prior knowledge, or
//! after TLS's ALPN) goes to hyper's HTTP/2 server, anything else to
//! raftlb's own HTTP/1 server ([`h1_server`]). Both apply the listener's
//! limits: head size and header count (431; HTTP/2: the header list size),
//! head read, send and keep-alive idle timeouts, and (HTTP/2) the streams
//! of one connection at backends at once
//! ([`ConnContext::backend_streams`]). On shutdown an HTTP/1 connection
//! answers its next request with `Connection: close` (an idle one is
//! closed after a second), so no request on its way is cut off; HTTP/2
//! gets GOAWAY. HTTP/2's head and send timeouts are followed by
//! [`Watched`] below hyper ([`client_conn`]).

use super::body::ProxyBody;
use super::client_body::ClientBody;
use super::client_conn::{self, ConnWatch, Tracked, Watched};
use super::h1_server::{self, head::HeadLimits};
use super::headers::{Claims, Forwarding};
use super::proxy::{self, ConnContext};
use super::rewind::Rewind;
use crate::access_log::{Record, TlsInfo};
use crate::dataplane::Shutdown;
use crate::dataplane::admission::{Admitted, Refusal};
use crate::dataplane::proxy_protocol::Origin;
use crate::view::SharedView;
use bytes::BytesMut;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use raftlb_config::HttpLimits;
use raftlb_config::limits::MAX_CONCURRENT_STREAMS;
use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Streams a client may reset before they are served, at once.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset for a client's protocol errors, in all.
const MAX_LOCAL_ERROR_RESETS: usize = 100;
/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every connection of one HTTP listener shares.
#[derive(Debug)]
pub struct HttpListener {
    name: String,
    view: SharedView,
    /// `http` or `https`, for `X-Forwarded-Proto` and `Forwarded`.
    scheme: &'static str,
    /// The HTTP/1 server's settings; their timeouts are the listener's,
    /// which HTTP/2 connections follow too.
    http1: h1_server::Settings,
    http2: http2::Builder<TokioExecutor>,
    max_backend_streams: usize,
    /// Whose forwarding headers are believed (`None`: everyone's).
    trusted_proxies: Option<Vec<raftlb_config::Cidr>>,
}

/// What a connection's first bytes say it speaks.
enum Protocol {
    Http1,
    Http2,
}

impl HttpListener {
    pub fn new(name: &str, limits: &HttpLimits, view: SharedView, scheme: &'static str) -> Self {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
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
            http1: h1_server::Settings {
                head: HeadLimits {
                    max_bytes: limits.max_header_bytes,
                    max_headers: limits.max_headers,
                },
                header_read_timeout: limits.header_read_timeout,
                keepalive_timeout: limits.keepalive_timeout,
                send_timeout: limits.send_timeout,
            },
            http2,
            max_backend_streams: limits.max_backend_streams as usize,
            trusted_proxies: limits.trusted_proxies.clone(),
        }
    }

    /// Serves one client connection, accepted at `accepted` (the first
    /// head's time runs from there, TLS handshake included), until it
    /// closes or shutdown drains it.
    pub async fn serve<S>(
        self: Arc<Self>,
        mut stream: S,
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
        let mut first = BytesMut::new();
        let deadline = accepted + self.http1.header_read_timeout;
        let protocol = match tokio::time::timeout_at(deadline, sniff(&mut stream, &mut first)).await {
            Ok(Some(protocol)) => protocol,
            Ok(None) => return,
            Err(_) => {
                admitted.count(Refusal::HeaderTimeout);
                return;
            }
        };
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
        match protocol {
            Protocol::Http1 => h1_server::serve(stream, first, self.http1, context, watch, &shutdown).await,
            Protocol::Http2 => {
                let stream = Rewind::new(first.freeze(), stream);
                self.serve_http2(stream, context, watch, shutdown).await
            }
        }
    }

    /// Serves an HTTP/2 connection with hyper.
    async fn serve_http2<S>(
        &self,
        stream: S,
        context: Arc<ConnContext>,
        watch: Arc<ConnWatch>,
        shutdown: Shutdown,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let client = context.client;
        let stream = Watched::new(
            stream,
            Arc::clone(&watch),
            self.http1.header_read_timeout,
            self.http1.send_timeout,
        );
        let service = {
            let watch = Arc::clone(&watch);
            service_fn(move |request: Request<Incoming>| {
                let (context, watch) = (Arc::clone(&context), Arc::clone(&watch));
                // Boxed: a request's future (the proxying, its retries and
                // its backend I/O) runs to several kilobytes, and hyper
                // keeps one per open stream.
                Box::pin(async move {
                    let in_flight = watch.request_started();
                    let request = request.map(ClientBody::Http2);
                    let (response, stream, record) = serve_request(request, context).await;
                    let record = record.map(|mut record| {
                        record.status = Some(response.status().as_u16());
                        record
                    });
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight, stream, record)))
                })
            })
        };
        let connection = self.http2.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            // GOAWAY at once: a client retries the streams it names unprocessed.
            () = shutdown.token.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = client_conn::idle(&watch, self.http1.keepalive_timeout) => {
                tracing::debug!(listener = %self.name, %client, "closing an idle connection");
                connection.as_mut().graceful_shutdown();
                // It closes once the client acknowledges the GOAWAY's PING;
                // one that never does is given a head's time.
                let closed = tokio::time::timeout(self.http1.header_read_timeout, connection).await;
                closed.unwrap_or_else(|_| {
                    tracing::debug!(listener = %self.name, %client, "idle connection did not close; dropped");
                    Ok(())
                })
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = %self.name, %client, error = %e, "HTTP/2 connection ended with an error");
        }
    }
}

/// Reads the connection's first bytes into `buf` until they tell the
/// protocol: `None` when the client closed (or failed) first.
async fn sniff<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Option<Protocol> {
    loop {
        let seen = buf.len().min(PREFACE.len());
        if buf[..seen] != PREFACE[..seen] {
            return Some(Protocol::Http1);
        }
        if seen == PREFACE.len() {
            return Some(Protocol::Http2);
        }
        buf.reserve(4 * 1024);
        let read =
            poll_fn(|cx| tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *stream), cx, buf)).await;
        if let Ok(0) | Err(_) = read {
            return None;
        }
    }
}

/// One HTTP/2 request's response, the backend stream its body holds, and
/// its record (none when the listener has just gone from the view: 503).
async fn serve_request(
    mut request: Request<ClientBody>,
    context: Arc<ConnContext>,
) -> (Response<ProxyBody>, Option<OwnedSemaphorePermit>, Option<Record>) {
    let Some(listener) = context.view.load().listener(&context.listener).cloned() else {
        let gone = proxy::local(StatusCode::SERVICE_UNAVAILABLE, "no route for this listener\n");
        return (gone, None, None);
    };
    let mut record = Record::http(listener, context.client, context.tls.clone(), &mut request);
    let (response, stream) = proxy::handle(request, None, context, &mut record).await;
    (response, stream, Some(record))
}
