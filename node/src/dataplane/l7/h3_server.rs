//! The HTTP/3 side facing clients: one QUIC connection's requests, each on
//! a task of its own, through the same proxy as HTTP/1 and HTTP/2
//! ([`proxy::handle`]): routes, limits, sticky sessions, retries and the
//! access log. The endpoint that admitted the connection is
//! [`quic`](crate::dataplane::quic).
//!
//! - **Handshake** within the listener's `header_read_timeout`; a request's
//!   head within it too, from its stream's start.
//! - **0-RTT** (`http3_early_data`): a request that arrives before the
//!   handshake is done came in early data, which an attacker may replay;
//!   only safe methods (GET, HEAD, OPTIONS) are served from it, others get
//!   `425 Too Early` (RFC 8470) and the client sends them again.
//! - **Send timeout**: a response whose bytes make no progress for the
//!   listener's `send_timeout` is reset.
//! - **Drain**: on a stop the connection sends GOAWAY, finishes the
//!   requests it has, and closes.

use super::body::ProxyBody;
use super::client_body::ClientBody;
use super::h3_body::H3Body;
use super::headers::{self, Claims, Forwarding};
use super::proxy::{self, ConnContext};
use crate::access_log::{Record, TlsInfo};
use crate::dataplane::Shutdown;
use crate::dataplane::admission::Admitted;
use crate::dataplane::proxy_protocol::Origin;
use crate::view::SharedView;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use raftlb_config::{HttpLimits, ListenerSpec};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;
/// HTTP/3's "no error" code (RFC 9114 §8.1), closing a connection.
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);

type SendHalf = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// What every HTTP/3 connection of one listener shares.
#[derive(Debug)]
pub struct Http3Listener {
    name: String,
    view: SharedView,
    limits: HttpLimits,
    early_data: bool,
}

/// A request's deadlines, copied into its task (the listener's limits
/// stay with the connection: nothing is cloned per request).
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// The head, from the stream's start (`header_read_timeout`).
    head: Duration,
    /// Each write of the response (`send_timeout`).
    send: Duration,
}

impl Http3Listener {
    pub fn new(spec: &ListenerSpec, view: SharedView) -> Self {
        Http3Listener {
            name: spec.name.clone(),
            view,
            limits: spec.http.clone(),
            early_data: spec.quic.early_data,
        }
    }

    /// Serves one admitted connection attempt to its end. `handshakes`
    /// counts the worker's handshakes under way, this one among them (the
    /// caller counted it) until it is done.
    pub async fn serve(
        self: Arc<Self>,
        incoming: quinn::Incoming,
        admitted: Admitted,
        handshakes: Arc<AtomicUsize>,
        shutdown: Shutdown,
    ) {
        let client = incoming.remote_address();
        let local = incoming.local_ip();
        let connection = self.handshake(incoming).await;
        handshakes.fetch_sub(1, Relaxed);
        let Some((connection, handshaken)) = connection else {
            return;
        };
        let tls = connection
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .map(|data| TlsInfo {
                version: "TLSv1.3",
                sni: data.server_name.as_deref().map(Arc::from),
            });
        let local = local.map_or_else(
            || std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
            |ip| std::net::SocketAddr::new(ip, 0),
        );
        let claims = Claims::of(self.limits.trusted_proxies.as_deref(), client.ip());
        let context = Arc::new(ConnContext {
            listener: self.name.clone(),
            client,
            origin: Origin::new(client, local),
            tls,
            forwarding: Forwarding::new(client, "https", claims),
            view: Arc::clone(&self.view),
            tunnels: shutdown.tracker.clone(),
            drain_deadline: shutdown.deadline.clone(),
            admitted,
            backend_streams: Arc::new(tokio::sync::Semaphore::new(
                self.limits.max_backend_streams as usize,
            )),
        });
        let _open = self
            .view
            .load()
            .listener(&self.name)
            .map(|l| l.traffic.open(true));
        self.serve_requests(connection, context, handshaken, shutdown)
            .await;
    }

    /// The connection once its handshake is done, or at once with 0-RTT
    /// (then the flag turns true when the handshake is done).
    async fn handshake(&self, incoming: quinn::Incoming) -> Option<(quinn::Connection, Arc<AtomicBool>)> {
        let client = incoming.remote_address();
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(e) => {
                tracing::debug!(listener = %self.name, %client, error = %e, "QUIC connection failed");
                return None;
            }
        };
        let timeout = self.limits.header_read_timeout;
        if self.early_data {
            let (connection, accepted) = match connecting.into_0rtt() {
                Ok(early) => early,
                Err(connecting) => return self.finish_handshake(connecting, timeout).await,
            };
            let handshaken = Arc::new(AtomicBool::new(false));
            let done = Arc::clone(&handshaken);
            let watched = connection.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, accepted).await {
                    Ok(_) => done.store(true, Relaxed),
                    Err(_) => watched.close(0u32.into(), b"handshake timeout"),
                }
            });
            return Some((connection, handshaken));
        }
        self.finish_handshake(connecting, timeout).await
    }

    async fn finish_handshake(
        &self,
        connecting: quinn::Connecting,
        timeout: Duration,
    ) -> Option<(quinn::Connection, Arc<AtomicBool>)> {
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(connection)) => Some((connection, Arc::new(AtomicBool::new(true)))),
            Ok(Err(e)) => {
                tracing::debug!(listener = %self.name, error = %e, "QUIC handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(listener = %self.name, "QUIC handshake timed out");
                None
            }
        }
    }

    /// Accepts the connection's requests, each on its own task, until the
    /// client closes it or a stop has drained it.
    async fn serve_requests(
        &self,
        connection: quinn::Connection,
        context: Arc<ConnContext>,
        handshaken: Arc<AtomicBool>,
        shutdown: Shutdown,
    ) {
        let client = context.client;
        let built = h3::server::builder()
            .max_field_section_size(self.limits.max_header_bytes as u64)
            .build(h3_quinn::Connection::new(connection.clone()))
            .await;
        let mut h3 = match built {
            Ok(h3) => h3,
            Err(e) => {
                tracing::debug!(listener = %self.name, %client, error = %e, "HTTP/3 connection failed");
                return;
            }
        };
        let mut draining = false;
        // One wait for the stop for the connection's life, not one
        // registered and dropped per request.
        let stop = shutdown.token.cancelled();
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                accepted = h3.accept() => accepted,
                () = &mut stop, if !draining => {
                    draining = true;
                    // GOAWAY: requests not yet begun go elsewhere; accept()
                    // ends once the ones begun are done.
                    if let Err(e) = h3.shutdown(0).await {
                        tracing::debug!(listener = %self.name, %client, error = %e, "GOAWAY not sent");
                        break;
                    }
                    continue;
                }
            };
            match accepted {
                Ok(Some(resolver)) => {
                    let request = serve_request(
                        resolver,
                        Arc::clone(&context),
                        Deadlines {
                            head: self.limits.header_read_timeout,
                            send: self.limits.send_timeout,
                        },
                        self.early_data.then(|| Arc::clone(&handshaken)),
                    );
                    shutdown.tracker.spawn(request);
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(listener = %self.name, %client, error = %e, "HTTP/3 connection ended");
                    }
                    break;
                }
            }
        }
        connection.close(H3_NO_ERROR, b"");
    }
}

/// Serves one request stream: reads its head, proxies it, sends the
/// response. `handshaken`: with 0-RTT on, whether the handshake is done.
async fn serve_request(
    resolver: Resolver,
    context: Arc<ConnContext>,
    deadlines: Deadlines,
    handshaken: Option<Arc<AtomicBool>>,
) {
    let (request, stream) = match tokio::time::timeout(deadlines.head, resolver.resolve_request()).await {
        Ok(Ok(resolved)) => resolved,
        Ok(Err(e)) => {
            tracing::debug!(listener = %context.listener, client = %context.client, error = %e, "HTTP/3 request refused");
            return;
        }
        Err(_) => {
            context
                .admitted
                .count(crate::dataplane::admission::Refusal::HeaderTimeout);
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let early = handshaken.is_some_and(|done| !done.load(Relaxed));
    if early && !is_safe(request.method()) {
        let too_early = proxy::local(StatusCode::TOO_EARLY, "sent in early data; send it again\n");
        let _ = respond(&mut send, too_early, deadlines.send).await;
        return;
    }
    let mut request = request.map(|()| ClientBody::Http3(H3Body::new(recv)));
    let Some(listener) = context.view.load().listener(&context.listener).cloned() else {
        let gone = proxy::local(StatusCode::SERVICE_UNAVAILABLE, "no route for this listener\n");
        let _ = respond(&mut send, gone, deadlines.send).await;
        return;
    };
    let mut record = Record::http(listener, context.client, context.tls.clone(), &mut request);
    let (response, backend_stream) = proxy::handle(request, None, Arc::clone(&context), &mut record).await;
    record.status = Some(response.status().as_u16());
    match respond(&mut send, response, deadlines.send).await {
        Ok(sent) => record.sent = sent,
        Err(e) => {
            tracing::debug!(listener = %context.listener, client = %context.client, error = %e, "HTTP/3 response cut");
            // Reset, so the client cannot take a cut body for a whole one.
            send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
        }
    }
    drop(backend_stream);
    record.finish();
}

/// GET, HEAD and OPTIONS: what early data may carry.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Sends `response` on `send`: head, body frame by frame, trailers, end.
/// Returns the body's bytes sent.
async fn respond(
    send: &mut SendHalf,
    response: Response<ProxyBody>,
    send_timeout: Duration,
) -> Result<u64, String> {
    let (mut parts, mut body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    parts.version = http::Version::HTTP_3;
    let head = Response::from_parts(parts, ());
    let timed = |what| move |_| format!("{what}: no progress for {send_timeout:?}");
    tokio::time::timeout(send_timeout, send.send_response(head))
        .await
        .map_err(timed("head"))?
        .map_err(|e| e.to_string())?;
    let mut sent = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        match frame.into_data() {
            Ok(data) => {
                sent += data.len() as u64;
                tokio::time::timeout(send_timeout, send.send_data(data))
                    .await
                    .map_err(timed("body"))?
                    .map_err(|e| e.to_string())?;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    tokio::time::timeout(send_timeout, send.send_trailers(trailers))
                        .await
                        .map_err(timed("trailers"))?
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    tokio::time::timeout(send_timeout, send.finish())
        .await
        .map_err(timed("end"))?
        .map_err(|e| e.to_string())?;
    Ok(sent)
}
