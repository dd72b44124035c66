//! The checks of one pool: name, balancing, backends, timeouts, sticky
//! policy, TLS to the backends and the health settings.

use super::{name, number, shown, text_len, timeout, token};
use crate::discovery::MAX_DISCOVERED;
use crate::health::{HealthCheck, OutlierDetection, PoolHealth, Probe, RetryPolicy};
use crate::limits::{
    MAX_BACKEND_CONNECTIONS, MAX_BACKENDS_PER_POOL, MAX_CONNECT_ATTEMPTS, MAX_CONSECUTIVE_FAILURES,
    MAX_LEARN_RATE, MAX_PERCENT, MAX_QUEUE, MAX_RETRIES_PER_SECOND, MAX_RETRY_ATTEMPTS, MAX_RISE_FALL,
    MAX_STICKY_ENTRIES, MIN_STICKY_TTL, STATUS_RANGE,
};
use crate::spec::{Algorithm, BackendTls, HashKey, PoolSpec};
use crate::sticky::{StickyKind, StickyPolicy};
use std::collections::HashSet;

pub(super) fn pool(p: &PoolSpec) -> Result<(), String> {
    name(&p.name).map_err(|why| format!("pool: {why}"))?;
    backends(p)?;
    settings(p).map_err(|why| format!("pool \"{}\": {why}", p.name))
}

fn settings(p: &PoolSpec) -> Result<(), String> {
    hash_key(p)?;
    timeout("connect_timeout", p.connect_timeout, false)?;
    timeout("response_timeout", p.response_timeout, false)?;
    number(
        "max_connect_attempts",
        p.max_connect_attempts,
        1,
        MAX_CONNECT_ATTEMPTS,
    )?;
    if let Some(policy) = &p.sticky {
        sticky(policy).map_err(|why| format!("sticky: {why}"))?;
    }
    if let Some(tls) = &p.tls {
        backend_tls(tls).map_err(|why| format!("tls: {why}"))?;
    }
    if let Some(discovery) = &p.discovery {
        super::discovery::spec(discovery).map_err(|why| format!("discovery: {why}"))?;
    }
    number(
        "max_connections",
        p.limits.max_connections,
        0,
        MAX_BACKEND_CONNECTIONS,
    )?;
    number("max_queue", p.limits.max_queue, 0, MAX_QUEUE)?;
    timeout("queue_timeout", p.limits.queue_timeout, false)?;
    health(&p.health)
}

/// At least one backend (none needed with `discovery`), at most
/// [`MAX_BACKENDS_PER_POOL`] ([`MAX_DISCOVERED`] of them discovered, and
/// only with `discovery`), each once and with a valid weight (a state
/// invariant as well).
pub(crate) fn backends(p: &PoolSpec) -> Result<(), String> {
    let discovered = p.backends.iter().filter(|b| b.discovered).count();
    if discovered > 0 && p.discovery.is_none() {
        return Err(format!(
            "pool \"{}\" has discovered backends but no discovery",
            shown(&p.name)
        ));
    }
    if discovered > MAX_DISCOVERED {
        return Err(format!(
            "pool \"{}\": {discovered} discovered backends are more than the {MAX_DISCOVERED} a pool may hold",
            shown(&p.name)
        ));
    }
    if p.backends.is_empty() && p.discovery.is_none() {
        return Err(format!(
            "pool \"{}\" has no backend (a pool needs at least one, or discovery)",
            shown(&p.name)
        ));
    }
    if p.backends.len() > MAX_BACKENDS_PER_POOL {
        return Err(format!(
            "pool \"{}\": {} backends are more than the {MAX_BACKENDS_PER_POOL} a pool may have",
            shown(&p.name),
            p.backends.len()
        ));
    }
    let mut seen = HashSet::with_capacity(p.backends.len());
    for b in &p.backends {
        if !seen.insert(b.address) {
            return Err(format!(
                "backend {} is twice in pool \"{}\"",
                b.address,
                shown(&p.name)
            ));
        }
        super::backend(&p.name, b)?;
    }
    Ok(())
}

/// Only `maglev` hashes a configurable key.
fn hash_key(p: &PoolSpec) -> Result<(), String> {
    match (&p.hash_key, p.algorithm) {
        (HashKey::SourceIp, _) | (HashKey::Path, Algorithm::Maglev) => Ok(()),
        (HashKey::Header(n), Algorithm::Maglev) => {
            token("header", n).map_err(|why| format!("hash_key: {why}"))
        }
        (HashKey::Cookie(n), Algorithm::Maglev) => {
            token("cookie", n).map_err(|why| format!("hash_key: {why}"))
        }
        (key, other) => Err(format!(
            "hash_key \"{}\" only applies to algorithm = \"maglev\", not \"{}\"",
            shown(&key.to_string()),
            other.name()
        )),
    }
}

fn sticky(policy: &StickyPolicy) -> Result<(), String> {
    match policy.kind {
        StickyKind::SourceIp if !policy.name.is_empty() => {
            return Err("kind \"source_ip\" takes no name".to_string());
        }
        StickyKind::SourceIp => {}
        other if policy.name.is_empty() => {
            return Err(format!(
                "kind \"{}\" needs a name (the cookie or header that identifies a session)",
                other.name()
            ));
        }
        _ => token("cookie or header", &policy.name)?,
    }
    if policy.ttl < MIN_STICKY_TTL {
        return Err(format!(
            "a sticky ttl must be at least {}",
            crate::duration::format(MIN_STICKY_TTL)
        ));
    }
    timeout("ttl", policy.ttl, false)?;
    number("source_prefix", policy.source_prefix_v4, 0, 32)?;
    number("source_prefix_v6", policy.source_prefix_v6, 0, 128)?;
    number("max_entries", policy.max_entries, 1, MAX_STICKY_ENTRIES)?;
    number("learn_rate", policy.learn_rate, 1, MAX_LEARN_RATE)?;
    number("learn_burst", policy.learn_burst, 1, MAX_LEARN_RATE)?;
    cookie_path(&policy.cookie.path)
}

/// The `Path` of the inserted cookie, written into `Set-Cookie` as is.
pub(crate) fn cookie_path(path: &str) -> Result<(), String> {
    text_len("a cookie path", path)?;
    if !path.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b';') {
        return Err(format!(
            "invalid cookie path \"{}\": printable ASCII without ';'",
            shown(path)
        ));
    }
    Ok(())
}

fn backend_tls(tls: &BackendTls) -> Result<(), String> {
    match (&tls.ca_file, tls.insecure) {
        (None, false) => {
            return Err(
                "say how to check the backends' certificates: ca_file = \"/path/ca.pem\", or insecure = true"
                    .to_string(),
            );
        }
        (Some(_), true) => return Err("insecure = true ignores ca_file; keep one of the two".to_string()),
        _ => {}
    }
    for text in [&tls.server_name, &tls.ca_file].into_iter().flatten() {
        text_len("a TLS setting", text)?;
    }
    Ok(())
}

fn health(health: &PoolHealth) -> Result<(), String> {
    if let Some(check) = &health.check {
        health_check(check).map_err(|why| format!("health_check: {why}"))?;
    }
    if let Some(outlier) = &health.outlier {
        outlier_detection(outlier).map_err(|why| format!("outlier: {why}"))?;
    }
    retry(&health.retry).map_err(|why| format!("retry: {why}"))?;
    number("panic_threshold", health.panic_threshold, 0, MAX_PERCENT)?;
    timeout("slow_start", health.slow_start, true)
}

fn health_check(check: &HealthCheck) -> Result<(), String> {
    timeout("interval", check.interval, false)?;
    timeout("timeout", check.timeout, false)?;
    if check.timeout > check.interval {
        return Err("a probe's timeout cannot exceed the interval between probes".to_string());
    }
    number("rise", check.rise, 1, MAX_RISE_FALL)?;
    number("fall", check.fall, 1, MAX_RISE_FALL)?;
    let Probe::Http(http) = &check.probe else {
        return Ok(());
    };
    probe_token(&http.method).map_err(|why| format!("method {why}"))?;
    probe_path(&http.path)?;
    if let Some(host) = &http.host {
        probe_token(host).map_err(|why| format!("host {why}"))?;
    }
    let (low, high) = http.expect_status;
    let (min, max) = STATUS_RANGE;
    if low > high || low < min || high > max {
        return Err(format!(
            "expect_status {low}-{high} is not a range within {min}-{max}"
        ));
    }
    http.expect_body
        .as_deref()
        .map_or(Ok(()), |body| text_len("expect_body", body))
}

/// A probe's method or host: visible ASCII without spaces.
pub(crate) fn probe_token(value: &str) -> Result<(), String> {
    text_len("the value", value)?;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be non-empty, printable ASCII without spaces".to_string());
    }
    Ok(())
}

/// A probe's path: starts with `/`, no spaces or control characters.
pub(crate) fn probe_path(path: &str) -> Result<(), String> {
    text_len("the path", path)?;
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("a path starts with / and has no spaces".to_string());
    }
    Ok(())
}

fn outlier_detection(outlier: &OutlierDetection) -> Result<(), String> {
    number(
        "consecutive_failures",
        outlier.consecutive_failures,
        1,
        MAX_CONSECUTIVE_FAILURES,
    )?;
    timeout("base_ejection_time", outlier.base_ejection_time, false)?;
    timeout("max_ejection_time", outlier.max_ejection_time, false)?;
    if outlier.max_ejection_time < outlier.base_ejection_time {
        return Err("max_ejection_time cannot be shorter than base_ejection_time".to_string());
    }
    number(
        "max_ejection_percent",
        outlier.max_ejection_percent,
        0,
        MAX_PERCENT,
    )
}

fn retry(retry: &RetryPolicy) -> Result<(), String> {
    number("attempts", retry.attempts, 0, MAX_RETRY_ATTEMPTS)?;
    number("budget_percent", retry.budget_percent, 0, MAX_PERCENT)?;
    number("min_per_second", retry.min_per_second, 0, MAX_RETRIES_PER_SECOND)
}
