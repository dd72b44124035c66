//! QUIC endpoints: an `https` listener's HTTP/3 side (`http3 = true`).
//!
//! Every worker runs a quinn endpoint on its own socket of one
//! `SO_REUSEPORT` group, and [`steering`] makes the kernel hand each
//! datagram to the worker that owns its connection. A worker's endpoint
//! admits a new client as a TCP accept loop would
//! ([`admission`](super::admission): the listener's ACL and per-source
//! limits), and then:
//!
//! - **Address validation.** Once more than the listener's
//!   `http3_retry_threshold` handshakes are under way on the worker, a
//!   client whose address is not yet validated is sent a Retry: a flood of
//!   Initials from spoofed sources costs one small stateless answer each,
//!   and no connection state.
//! - **Limits.** The listener's `max_connections` counts QUIC connections
//!   with its TCP ones (over it: refused); a connection has at most
//!   [`MAX_CONCURRENT_STREAMS`] requests open, is closed after the
//!   listener's `keepalive_timeout` without a packet, and its handshake must
//!   be done within `header_read_timeout`. The endpoint keeps at most
//!   [`MAX_INCOMING`] connection attempts not yet answered.
//! - **Drain.** On a stop, the endpoint takes no new connection, each
//!   connection sends GOAWAY and finishes its requests
//!   ([`h3_server`](super::l7::h3_server)), and the endpoint closes at the
//!   drain's deadline.

pub mod steering;

use super::admission;
use super::l7::h3_server::Http3Listener;
use super::{Limits, Shutdown};
use crate::view::SharedView;
use quinn::crypto::rustls::QuicServerConfig;
use raftlb_config::ListenerSpec;
use raftlb_config::limits::MAX_CONCURRENT_STREAMS;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Connection attempts one endpoint holds before answering them.
pub const MAX_INCOMING: usize = 4096;

/// What the workers of one HTTP/3 listener share: one TLS and token key
/// (any worker validates another's Retry token, resumes another's
/// session), one stateless-reset key.
#[derive(Debug, Clone)]
pub struct Http3Config {
    server: quinn::ServerConfig,
    endpoint: quinn::EndpointConfig,
    /// Sockets in the listener's group (one per serving worker).
    sockets: usize,
}

impl Http3Config {
    /// The configuration of `spec`'s HTTP/3 side, for `sockets` workers.
    pub fn new(spec: &ListenerSpec, view: SharedView, sockets: usize) -> Result<Http3Config, String> {
        let tls =
            crate::tls::quic_server_config(view, spec.http.default_certificate.clone(), spec.quic.early_data)
                .map_err(|e| e.to_string())?;
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into())
            // HTTP/3's control stream and QPACK's two, and room for a few more.
            .max_concurrent_uni_streams(8u32.into())
            .max_idle_timeout(spec.http.keepalive_timeout.try_into().ok())
            // Requests and responses are mostly small streams, many at once:
            // packing them without round-robin fragments less.
            .send_fairness(false);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server
            .transport_config(Arc::new(transport))
            .max_incoming(MAX_INCOMING)
            .incoming_buffer_size_total(16 * 1024 * 1024)
            .migration(true);
        let mut reset_key = [0u8; 64];
        getrandom::fill(&mut reset_key).map_err(|e| e.to_string())?;
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_key);
        let endpoint = quinn::EndpointConfig::new(Arc::new(reset_key));
        Ok(Http3Config {
            server,
            endpoint,
            sockets,
        })
    }
}

/// Serves worker `worker`'s share of an HTTP/3 listener on `socket` until
/// the listener stops, then drains its connections.
pub async fn serve(
    spec: ListenerSpec,
    socket: std::net::UdpSocket,
    worker: usize,
    config: Arc<Http3Config>,
    limits: Limits,
    view: SharedView,
    shutdown: Shutdown,
) -> io::Result<()> {
    let mut endpoint_config = config.endpoint.clone();
    let sockets = config.sockets;
    endpoint_config.cid_generator(move || Box::new(steering::WorkerCids::new(worker, sockets)));
    let endpoint = quinn::Endpoint::new(
        endpoint_config,
        Some(config.server.clone()),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let name = spec.name.clone();
    let http = Arc::new(Http3Listener::new(&spec, Arc::clone(&view)));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let retry_threshold = spec.quic.retry_threshold as usize;
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            () = shutdown.token.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        let client = incoming.remote_address();
        let admitted = {
            let loaded = view.load();
            let Some(listener) = loaded.listener(&name) else {
                incoming.refuse();
                continue;
            };
            match admission::admit(
                &listener.guard,
                &listener.acl,
                &listener.spec.limits,
                client.ip(),
                crate::health::now_ms(),
            ) {
                Ok(admitted) => admitted,
                Err(refusal) => {
                    tracing::debug!(listener = %name, %client, reason = refusal.name(), "QUIC connection refused");
                    // Dropped unanswered: a refused source is sent nothing
                    // (an answer would be a reflection for spoofed ones).
                    incoming.ignore();
                    continue;
                }
            }
        };
        if !incoming.remote_address_validated() && handshakes.load(Relaxed) >= retry_threshold {
            // Stateless: the client comes back with a token, or never.
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        let Ok(permit) = Arc::clone(&limits.listener).try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        // Counted here, not on the task: a burst is judged before it runs.
        handshakes.fetch_add(1, Relaxed);
        let (http, handshakes, shutdown) = (Arc::clone(&http), Arc::clone(&handshakes), shutdown.clone());
        shutdown.tracker.clone().spawn(async move {
            http.serve(incoming, admitted, handshakes, shutdown).await;
            drop(permit);
        });
    }
    // No new connections; those open drain on their own tasks, and the
    // endpoint lives until they are done or the drain's time is up.
    endpoint.set_server_config(None);
    tokio::select! {
        () = endpoint.wait_idle() => {}
        () = shutdown.deadline.cancelled() => endpoint.close(0u32.into(), b"shutting down"),
    }
    Ok(())
}
