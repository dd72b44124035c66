//! Sticky sessions for HTTP: which session a request belongs to (its
//! `cookie` cookie, the application's session cookie, a header, or the
//! client's address), and, once a backend has answered, what the session
//! needs: the `Set-Cookie` of a `cookie` session, the application's new
//! session cookie learned from the response, and with `contract = "sync"`
//! the commit of a new session before the response leaves.

use super::body::ProxyBody;
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

/// The value of cookie `name` in the request's `Cookie` headers.
fn request_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| cookie_value(pair, name))
}

/// The value `Set-Cookie` gives cookie `name`, unless it deletes it.
fn response_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.as_bytes().split(|&b| b == b';').next())
        .find_map(|pair| cookie_value(pair, name))
        .filter(|value| !value.is_empty())
}

/// `value` if `pair` is `name=value` (whitespace and quotes trimmed).
fn cookie_value<'p>(pair: &'p [u8], name: &str) -> Option<&'p [u8]> {
    let pair = pair.trim_ascii();
    let eq = pair.iter().position(|&b| b == b'=')?;
    let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
    if key != name.as_bytes() {
        return None;
    }
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn finds_request_cookies() {
        let h = headers(header::COOKIE, &["a=1; JSESSIONID=abc ; b=2", "c=\"q\""]);
        assert_eq!(request_cookie(&h, "JSESSIONID"), Some(&b"abc"[..]));
        assert_eq!(request_cookie(&h, "c"), Some(&b"q"[..]));
        assert_eq!(request_cookie(&h, "JSESSION"), None);
        assert_eq!(request_cookie(&h, "d"), None);
        assert_eq!(
            request_cookie(&headers(header::COOKIE, &["garbage;;=;x"]), "x"),
            None
        );
    }

    #[test]
    fn learns_set_cookies_but_not_deletions() {
        let h = headers(
            header::SET_COOKIE,
            &["other=1; Path=/", "JSESSIONID=s1; Path=/; HttpOnly"],
        );
        assert_eq!(response_cookie(&h, "JSESSIONID"), Some(&b"s1"[..]));
        let deleted = headers(header::SET_COOKIE, &["JSESSIONID=; Max-Age=0"]);
        assert_eq!(response_cookie(&deleted, "JSESSIONID"), None);
    }
}
