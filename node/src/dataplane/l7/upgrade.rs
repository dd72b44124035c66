//! HTTP/1.1 `Upgrade` to a protocol the listener passes on (`upgrades`,
//! WebSocket by default): the request goes to a
//! backend on a connection of its own, with its `Upgrade` and `Connection`
//! headers kept; any other answer is streamed back as an ordinary
//! response (under the pool's `response_timeout` for its head); when the
//! backend answers `101 Switching Protocols`, the
//! client's and the backend's connections are spliced both ways until
//! both close or the tunnel is silent for the listener's
//! `tunnel_idle_timeout`. The tunnel counts as an active connection of its
//! backend (least connections) for as long as it lives, and, being its own
//! task, outlives any change of configuration. It is tracked like a
//! connection: a draining node waits for it to end, up to the drain
//! timeout, and the hard stop after that closes it.

use super::backend_conn::{self, BackendBody};
use super::body::{ProxyBody, UpstreamBody};
use super::client_body::ClientBody;
use super::h1_server::ClientUpgrade;
use super::headers::{connection_has, remove_hop_by_hop};
use super::proxy::ConnContext;
use super::request_body::{BodyLimits, RequestBody};
use crate::dataplane::splice::splice;
use crate::dataplane::upstream::{self, ConnectError};
use crate::view::{Attempts, PoolView};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use raftlb_config::HttpLimits;
use std::net::SocketAddr;

/// The `Upgrade` value to pass on for an HTTP/1.1 request that asks to
/// upgrade: the protocols it offers that the listener passes on
/// (`allowed`, lowercase names; a version suffix such as `/13` is kept).
/// `None` when it offers none of them: the request is then served as a
/// plain one (header rewriting drops its `Upgrade`), so `h2c` or any
/// protocol the listener does not name never reaches a backend as a tunnel.
pub fn requested<B>(request: &Request<B>, allowed: &[String]) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 || !connection_has(request.headers(), "upgrade") {
        return None;
    }
    let offered = request.headers().get(header::UPGRADE)?.to_str().ok()?;
    let kept: Vec<&str> = offered
        .split(',')
        .map(str::trim)
        .filter(|protocol| {
            let name = protocol.split('/').next().unwrap_or("");
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// Why an upgrade got no backend answer.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("backend {backend}: {source}")]
    Backend {
        backend: SocketAddr,
        source: hyper::Error,
    },
    #[error("backend {backend}: no response headers within {timeout:?}")]
    Timeout {
        backend: SocketAddr,
        timeout: std::time::Duration,
    },
    /// Only raftlb's HTTP/1 server hands its connections over.
    #[error("the client's connection cannot be upgraded")]
    NotUpgradable,
}

/// An upgrade a request asks for.
#[derive(Debug)]
pub struct Asked {
    /// The `Upgrade` value to pass on ([`requested`]), which header
    /// rewriting removed from the request.
    pub protocols: HeaderValue,
    /// The client's connection, once the `101` has gone out (`None`: the
    /// server cannot hand it over).
    pub client: Option<ClientUpgrade>,
}

/// Sends the upgrade request to a backend of `pool` (`preferred` first,
/// else the balancer's picks under `attempts`) on a new connection and
/// returns the backend's answer; a `101` starts the tunnel.
pub async fn forward(
    request: Request<ClientBody>,
    upgrade: Asked,
    pool: &PoolView,
    preferred: Option<SocketAddr>,
    mut attempts: Attempts,
    limits: &HttpLimits,
    conn: &ConnContext,
) -> Result<(Response<ProxyBody>, SocketAddr), UpgradeError> {
    let (tunnels, origin) = (&conn.tunnels, &conn.origin);
    let deadline = conn.drain_deadline.clone();
    let Some(ClientUpgrade(client_side)) = upgrade.client else {
        return Err(UpgradeError::NotUpgradable);
    };
    let mut request = request.map(|body| RequestBody::streaming(body, BodyLimits::of(limits)));
    let idle = limits.tunnel_idle_timeout;
    let headers: &mut HeaderMap = request.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade.protocols);
    let (mut sender, guard) = upstream::reach(pool, preferred, &mut attempts, |backend| async move {
        backend_conn::handshake_http1(backend.address(), pool, Some(origin)).await
    })
    .await?;
    let backend = guard.backend().address();
    let timeout = pool.spec.response_timeout;
    let mut response = match tokio::time::timeout(timeout, sender.send_request(request)).await {
        Ok(sent) => sent.map_err(|source| UpgradeError::Backend { backend, source })?,
        Err(_) => return Err(UpgradeError::Timeout { backend, timeout }),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused: an ordinary response, streamed like any other, on a
        // connection not worth keeping.
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let body = UpstreamBody::new(BackendBody::Hyper(body), guard, false);
        return Ok((Response::from_parts(parts, ProxyBody::Upstream(body)), backend));
    }
    let backend_side = hyper::upgrade::on(&mut response);
    tunnels.spawn(async move {
        let _counted = guard;
        let (client, server) = tokio::join!(client_side, backend_side);
        match (client, server) {
            (Ok(client), Ok(server)) => {
                let result = splice(client, TokioIo::new(server), idle, &deadline).await;
                tracing::debug!(%backend, ?result, "tunnel closed");
            }
            (Err(_), _) => {
                tracing::debug!(%backend, "upgrade not completed: the client's 101 did not go out")
            }
            (_, Err(e)) => tracing::debug!(%backend, error = %e, "upgrade not completed"),
        }
    });
    let (parts, _) = response.into_parts();
    Ok((
        Response::from_parts(parts, ProxyBody::bytes(Default::default())),
        backend,
    ))
}
