//! The checks of one listener: name, protocol rules, connection and HTTP
//! limits, timeouts, and its content-routing rules.

use super::{name, number, shown, text_len, timeout};
use crate::acl::{AclChange, AclRule};
use crate::limits::{MAX_ACL_RULES, MAX_BODY_MIN_RATE, MAX_CONCURRENT_STREAMS, MAX_UPGRADES};
use crate::limits::{
    MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_HEADER_BYTES, MAX_HEADERS, MAX_REGEX_BYTES,
    MAX_REGEX_COMPILED_BYTES, MAX_ROUTE_LIST, MAX_ROUTES, MAX_TEXT_BYTES, MIN_HEADER_BYTES,
};
use crate::route::RouteSpec;
use crate::spec::{ListenerSpec, Protocol};

pub(super) fn listener(l: &ListenerSpec) -> Result<(), String> {
    name(&l.name).map_err(|why| format!("listener: {why}"))?;
    pool_or_routes(l)?;
    settings(l).map_err(|why| format!("listener \"{}\": {why}", l.name))
}

fn settings(l: &ListenerSpec) -> Result<(), String> {
    number("max_connections", l.max_connections, 1, MAX_CONNECTIONS)?;
    timeout("idle_timeout", l.idle_timeout, false)?;
    http_limits(l)?;
    l.limits.check()?;
    acl(&l.acl)?;
    proxy(l)?;
    quic(l)?;
    if l.routes.len() > MAX_ROUTES {
        return Err(format!(
            "{} routes are more than the {MAX_ROUTES} a listener may have",
            l.routes.len()
        ));
    }
    for (i, r) in l.routes.iter().enumerate() {
        route(r).map_err(|why| format!("route[{i}]: {why}"))?;
    }
    Ok(())
}

/// `accept_proxy` (not for UDP) and `trusted_proxies` (HTTP only), each
/// a bounded list of networks.
fn proxy(l: &ListenerSpec) -> Result<(), String> {
    if l.accepts_proxy() && l.protocol == Protocol::Udp {
        return Err("accept_proxy does not apply to udp listeners".to_string());
    }
    if l.http.trusted_proxies.is_some() && !l.protocol.is_http() {
        return Err(format!(
            "trusted_proxies only applies to http listeners, this one is {}",
            l.protocol.name()
        ));
    }
    let trusted_proxies = l.http.trusted_proxies.as_deref().unwrap_or_default();
    for (key, networks) in [
        ("proxy_trusted", &l.proxy_trusted[..]),
        ("trusted_proxies", trusted_proxies),
    ] {
        if networks.len() > MAX_ACL_RULES {
            return Err(format!("{key} lists more than {MAX_ACL_RULES} networks"));
        }
    }
    Ok(())
}

/// HTTP/3 on `https` listeners only, on a UDP address apart from any
/// other; routing by connection ID on `udp` listeners only.
fn quic(l: &ListenerSpec) -> Result<(), String> {
    l.quic.check()?;
    if l.quic.http3 && l.protocol != Protocol::Https {
        return Err(format!(
            "http3 only applies to https listeners, this one is {}",
            l.protocol.name()
        ));
    }
    if l.quic.route_by_connection_id && l.protocol != Protocol::Udp {
        return Err(format!(
            "quic only applies to udp listeners, this one is {}",
            l.protocol.name()
        ));
    }
    Ok(())
}

/// Where a listener sends traffic: TCP and UDP to their pool alone, HTTP to
/// a pool, routes, or both (a state invariant as well).
pub(crate) fn pool_or_routes(l: &ListenerSpec) -> Result<(), String> {
    if !l.protocol.is_http() && (l.pool.is_none() || !l.routes.is_empty()) {
        return Err(format!(
            "{} listener \"{}\" needs a pool and takes no routes",
            l.protocol.name(),
            l.name
        ));
    }
    if l.pool.is_none() && l.routes.is_empty() {
        return Err(format!("listener \"{}\" has neither a pool nor routes", l.name));
    }
    Ok(())
}

fn http_limits(l: &ListenerSpec) -> Result<(), String> {
    let http = &l.http;
    for (key, d) in [
        ("header_read_timeout", http.header_read_timeout),
        ("keepalive_timeout", http.keepalive_timeout),
        ("body_timeout", http.body_timeout),
        ("send_timeout", http.send_timeout),
        ("tunnel_idle_timeout", http.tunnel_idle_timeout),
    ] {
        timeout(key, d, false)?;
    }
    number("body_min_rate", http.body_min_rate, 0, MAX_BODY_MIN_RATE)?;
    number(
        "max_backend_streams",
        http.max_backend_streams,
        1,
        MAX_CONCURRENT_STREAMS,
    )?;
    number(
        "max_header_bytes",
        http.max_header_bytes,
        MIN_HEADER_BYTES,
        MAX_HEADER_BYTES,
    )?;
    number("max_headers", http.max_headers, 1, MAX_HEADERS)?;
    number("max_body_bytes", http.max_body_bytes, 1, MAX_BODY_BYTES)?;
    if let Some(certificate) = &http.default_certificate {
        if l.protocol != Protocol::Https {
            return Err("default_certificate only applies to https listeners".to_string());
        }
        name(certificate).map_err(|why| format!("default_certificate: {why}"))?;
    }
    if http.upgrades.len() > MAX_UPGRADES {
        return Err(format!(
            "{} upgrade protocols are more than {MAX_UPGRADES}",
            http.upgrades.len()
        ));
    }
    for protocol in &http.upgrades {
        token("upgrade protocol", protocol)?;
        if protocol.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "upgrade protocol \"{}\" must be lowercase",
                shown(protocol)
            ));
        }
        if protocol.starts_with("h2") {
            return Err(format!(
                "upgrade protocol \"{}\" would let clients bypass the proxy's HTTP/2 handling",
                shown(protocol)
            ));
        }
    }
    if http.redirect_https && l.protocol != Protocol::Http {
        return Err("redirect_https only applies to http listeners".to_string());
    }
    Ok(())
}

/// A listener's ACL: bounded, sorted by network, each network once (the
/// form [`acl::canonical`](crate::acl::canonical) gives).
fn acl(rules: &[AclRule]) -> Result<(), String> {
    if rules.len() > MAX_ACL_RULES {
        return Err(format!(
            "{} ACL rules are more than the {MAX_ACL_RULES} a listener may have",
            rules.len()
        ));
    }
    match rules.windows(2).find(|w| w[0].network >= w[1].network) {
        Some(w) => Err(format!(
            "ACL rules must be sorted by network, each network once ({} then {})",
            w[0].network, w[1].network
        )),
        None => Ok(()),
    }
}

/// One `ctl acl` change: bounded in size.
pub(super) fn acl_change(change: &AclChange) -> Result<(), String> {
    let size = change.set.len() + change.remove.len();
    if size > MAX_ACL_RULES {
        return Err(format!(
            "an ACL change of {size} rules is larger than {MAX_ACL_RULES}"
        ));
    }
    Ok(())
}

fn route(r: &RouteSpec) -> Result<(), String> {
    let m = &r.matches;
    if let Some(h) = &m.host {
        host(h)?;
    }
    for p in [&m.path, &m.path_prefix].into_iter().flatten() {
        http_path(p)?;
    }
    if let Some(re) = &m.path_regex {
        path_regex(re)?;
    }
    let lists = [
        ("method", m.methods.len()),
        ("header", m.headers.len()),
        ("cookie", m.cookies.len()),
        ("set_headers", r.set_headers.len()),
        ("remove_headers", r.remove_headers.len()),
    ];
    for (what, len) in lists {
        if len > MAX_ROUTE_LIST {
            return Err(format!("{len} {what} entries are more than {MAX_ROUTE_LIST}"));
        }
    }
    m.methods.iter().try_for_each(|method| route_method(method))?;
    for (what, pairs) in [
        ("header", &m.headers),
        ("cookie", &m.cookies),
        ("header", &r.set_headers),
    ] {
        for (n, value) in pairs {
            token(what, n)?;
            token_value(what, value)?;
        }
    }
    r.remove_headers.iter().try_for_each(|n| token("header", n))
}

/// A route's host: a name, or `*.name` for any subdomain.
pub(crate) fn host(value: &str) -> Result<(), String> {
    text_len("a host", value)?;
    let bare = value.strip_prefix("*.").unwrap_or(value);
    let valid = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(()).ok_or_else(|| {
        format!(
            "invalid host \"{}\" (a name, or *.name for any subdomain)",
            shown(value)
        )
    })
}

/// A route's `path` or `path_prefix`.
pub(crate) fn http_path(value: &str) -> Result<(), String> {
    text_len("a path", value)?;
    value
        .starts_with('/')
        .then_some(())
        .ok_or_else(|| format!("\"{}\" must start with '/'", shown(value)))
}

/// A route's `path_regex`: bounded as written and as compiled, so every
/// node compiles it, quickly.
pub(crate) fn path_regex(value: &str) -> Result<(), String> {
    if value.len() > MAX_REGEX_BYTES {
        return Err(format!(
            "a regular expression of {} bytes is longer than {MAX_REGEX_BYTES}",
            value.len()
        ));
    }
    regex::RegexBuilder::new(value)
        .size_limit(MAX_REGEX_COMPILED_BYTES)
        .build()
        .map(drop)
        .map_err(|e| format!("invalid regular expression: {e}"))
}

/// A method a route matches: letters only.
pub(crate) fn route_method(method: &str) -> Result<(), String> {
    text_len("a method", method)?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("invalid method \"{}\"", shown(method)));
    }
    Ok(())
}

/// A header or cookie name: an RFC 9110 token.
pub(crate) fn token(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TEXT_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    valid
        .then_some(())
        .ok_or_else(|| format!("invalid {what} name \"{}\"", shown(name)))
}

/// A header or cookie value: printable ASCII (and tabs).
pub(crate) fn token_value(what: &str, value: &str) -> Result<(), String> {
    text_len(&format!("a {what} value"), value)?;
    if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return Err(format!("the {what} value must be printable ASCII"));
    }
    Ok(())
}
