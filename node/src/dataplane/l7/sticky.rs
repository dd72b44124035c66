//! Sticky sessions for HTTP: which session a request belongs to (its
//! `cookie` cookie, the application's session cookie, a header, or the
//! client's address), and, once a backend has answered, what the session
//! needs: the `Set-Cookie` of a `cookie` session, the application's new
//! session cookie learned from the response, and with `contract = "sync"`
//! the commit of a new session before the response leaves.

use super::body::ProxyBody;
use super::cookies::{request_cookie, response_cookie};
use crate::sticky::Affinity;
use crate::view::PoolView;
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use raftlb_config::{StickyKey, StickyKind};
use std::net::{IpAddr, SocketAddr};

/// The session `headers` (from `client`) belong to in `pool`, if the pool is sticky.
pub fn affinity(pool: &PoolView, headers: &HeaderMap, client: IpAddr) -> Option<Affinity> {
    let sticky = pool.sticky.as_ref()?;
    let accepts = |b| pool.keeps_sessions(b);
    let name = sticky.policy.name.as_str();
    Some(match sticky.policy.kind {
        StickyKind::Cookie => match request_cookie(headers, name) {
            Some(value) => sticky.by_cookie(value, accepts),
            None => Affinity::default(),
        },
        StickyKind::LearnCookie => match request_cookie(headers, name) {
            Some(value) => sticky.by_key(StickyKey::of(value), accepts),
            None => Affinity::default(),
        },
        StickyKind::Header => match headers.get(name) {
            Some(value) => sticky.by_key(StickyKey::of(value.as_bytes()), accepts),
            None => Affinity::default(),
        },
        StickyKind::SourceIp => sticky.by_source(client, accepts),
    })
}

/// Completes the session after `backend` answered with `response`. `Err`
/// (only with `contract = "sync"`) means a new session could not be
/// committed, so the response must not reach the client.
pub async fn settle(
    pool: &PoolView,
    affinity: Option<&Affinity>,
    backend: SocketAddr,
    response: &mut Response<ProxyBody>,
) -> Result<(), String> {
    let (Some(sticky), Some(affinity)) = (&pool.sticky, affinity) else {
        return Ok(());
    };
    let settled = sticky.settle(affinity, backend);
    if let Some(value) = settled.set_cookie
        && let Ok(header) = HeaderValue::from_str(&sticky.cookie_header(&value))
    {
        response.headers_mut().append(header::SET_COOKIE, header);
    }
    let learned = match sticky.policy.kind {
        StickyKind::LearnCookie => response_cookie(response.headers(), &sticky.policy.name)
            .and_then(|value| sticky.learn(value, backend)),
        _ => None,
    };
    for commit in settled.commit.into_iter().chain(learned) {
        commit.await?;
    }
    Ok(())
}
