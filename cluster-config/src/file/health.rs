//! The pool keys about failing backends: `[pool.health_check]`,
//! `[pool.outlier]`, `[pool.retry]`, `slow_start` and `panic_threshold`.

use crate::health::{HealthCheck, HttpProbe, OutlierDetection, PoolHealth, Probe, RetryPolicy};
use crate::limits::{
    MAX_CONSECUTIVE_FAILURES, MAX_PERCENT, MAX_RETRIES_PER_SECOND, MAX_RETRY_ATTEMPTS, MAX_RISE_FALL,
    STATUS_RANGE,
};
use crate::reader::{Field, Reader, Section};
use crate::validate;

/// Reads the health keys of a pool section (the rest is the caller's).
pub(super) fn pool_health(reader: &mut Reader<'_>, s: &mut Section<'_, '_>) -> Option<PoolHealth> {
    let check = s
        .optional("health_check")
        .map(|f| reader.table(&f).and_then(|section| health_check(reader, section)));
    let outlier = s
        .optional("outlier")
        .map(|f| reader.table(&f).and_then(|section| outlier(reader, section)));
    let retry = s
        .optional("retry")
        .map(|f| reader.table(&f).and_then(|section| retry(reader, section)));
    let slow_start = s.optional("slow_start").map(|f| reader.duration(&f));
    let panic_threshold = s
        .optional("panic_threshold")
        .map(|f| reader.uint(&f, 0, MAX_PERCENT.into()).map(|n| n as u32));
    let defaults = PoolHealth::default();
    Some(PoolHealth {
        check: match check {
            Some(check) => Some(check?),
            None => None,
        },
        outlier: match outlier {
            Some(outlier) => Some(outlier?),
            None => None,
        },
        panic_threshold: panic_threshold.unwrap_or(Some(defaults.panic_threshold))?,
        slow_start: slow_start.unwrap_or(Some(defaults.slow_start))?,
        retry: retry.unwrap_or(Some(defaults.retry))?,
    })
}

const PROBES: [(&str, bool); 2] = [("tcp", false), ("http", true)];

/// `[pool.health_check]`: `type`, `interval`, `timeout`, `rise`, `fall`, and
/// for `http`: `method`, `path`, `host`, `expect_status`, `expect_body`.
pub(super) fn health_check(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<HealthCheck> {
    let http = match s.optional("type") {
        Some(f) => reader.choice(&f, "type", &PROBES),
        None => Some(false),
    };
    let interval = s.optional("interval").map(|f| reader.duration(&f));
    let timeout_field = s.optional("timeout");
    let timeout = timeout_field.as_ref().map(|f| reader.duration(f));
    let rise = s
        .optional("rise")
        .map(|f| reader.uint(&f, 1, MAX_RISE_FALL.into()).map(|n| n as u32));
    let fall = s
        .optional("fall")
        .map(|f| reader.uint(&f, 1, MAX_RISE_FALL.into()).map(|n| n as u32));
    let method = s.optional("method");
    let path = s.optional("path");
    let host = s.optional("host");
    let expect_status = s.optional("expect_status");
    let expect_body = s.optional("expect_body");
    s.finish(reader);

    let probe = match http? {
        false => {
            for f in [&method, &path, &host, &expect_status, &expect_body]
                .into_iter()
                .flatten()
            {
                reader.field_error(f, "only an http health check takes this key (type = \"http\")");
            }
            Probe::Tcp
        }
        true => Probe::Http(HttpProbe {
            method: match &method {
                Some(f) => token(reader, f)?,
                None => "GET".to_string(),
            },
            path: match &path {
                Some(f) => {
                    let p = reader.str(f)?;
                    reader.checked(f, p.to_string(), validate::probe_path(p))?
                }
                None => "/".to_string(),
            },
            host: match &host {
                Some(f) => Some(token(reader, f)?),
                None => None,
            },
            expect_status: match &expect_status {
                Some(f) => status_range(reader, f)?,
                None => (200, 399),
            },
            expect_body: match &expect_body {
                Some(f) => {
                    let body = reader.str(f)?;
                    Some(reader.checked(f, body.to_string(), validate::text_len("expect_body", body))?)
                }
                None => None,
            },
        }),
    };
    let check = HealthCheck {
        probe,
        interval: interval.unwrap_or(Some(HealthCheck::DEFAULT_INTERVAL))?,
        timeout: timeout.unwrap_or(Some(HealthCheck::DEFAULT_TIMEOUT))?,
        rise: rise.unwrap_or(Some(HealthCheck::DEFAULT_RISE))?,
        fall: fall.unwrap_or(Some(HealthCheck::DEFAULT_FALL))?,
    };
    if check.timeout > check.interval {
        if let Some(f) = &timeout_field {
            reader.field_error(f, "a probe's timeout cannot exceed the interval between probes");
        }
        return None;
    }
    Some(check)
}

/// `[pool.outlier]`: `consecutive_failures`, `base_ejection_time`,
/// `max_ejection_time`, `max_ejection_percent`.
fn outlier(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<OutlierDetection> {
    let defaults = OutlierDetection::default();
    let failures = s.optional("consecutive_failures").map(|f| {
        reader
            .uint(&f, 1, MAX_CONSECUTIVE_FAILURES.into())
            .map(|n| n as u32)
    });
    let base = s.optional("base_ejection_time").map(|f| reader.duration(&f));
    let max_field = s.optional("max_ejection_time");
    let max = max_field.as_ref().map(|f| reader.duration(f));
    let percent = s
        .optional("max_ejection_percent")
        .map(|f| reader.uint(&f, 0, MAX_PERCENT.into()).map(|n| n as u32));
    s.finish(reader);
    let outlier = OutlierDetection {
        consecutive_failures: failures.unwrap_or(Some(defaults.consecutive_failures))?,
        base_ejection_time: base.unwrap_or(Some(defaults.base_ejection_time))?,
        max_ejection_time: max.unwrap_or(Some(defaults.max_ejection_time))?,
        max_ejection_percent: percent.unwrap_or(Some(defaults.max_ejection_percent))?,
    };
    if outlier.max_ejection_time < outlier.base_ejection_time {
        if let Some(f) = &max_field {
            reader.field_error(f, "max_ejection_time cannot be shorter than base_ejection_time");
        }
        return None;
    }
    Some(outlier)
}

/// `[pool.retry]`: `attempts`, `budget_percent`, `min_per_second`.
fn retry(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<RetryPolicy> {
    let defaults = RetryPolicy::default();
    let attempts = s
        .optional("attempts")
        .map(|f| reader.uint(&f, 0, MAX_RETRY_ATTEMPTS.into()).map(|n| n as u32));
    let percent = s
        .optional("budget_percent")
        .map(|f| reader.uint(&f, 0, MAX_PERCENT.into()).map(|n| n as u32));
    let min = s.optional("min_per_second").map(|f| {
        reader
            .uint(&f, 0, MAX_RETRIES_PER_SECOND.into())
            .map(|n| n as u32)
    });
    s.finish(reader);
    Some(RetryPolicy {
        attempts: attempts.unwrap_or(Some(defaults.attempts))?,
        budget_percent: percent.unwrap_or(Some(defaults.budget_percent))?,
        min_per_second: min.unwrap_or(Some(defaults.min_per_second))?,
    })
}

/// A method or host: visible ASCII without spaces.
fn token(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<String> {
    let value = reader.str(field)?;
    reader.checked(field, value.to_string(), validate::probe_token(value))
}

/// `200`, or a range `"200-399"`.
fn status_range(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<(u16, u16)> {
    let (min, max) = STATUS_RANGE;
    let text = match field.is_integer() {
        true => reader.uint(field, min.into(), max.into())?.to_string(),
        false => reader.str(field)?.to_string(),
    };
    let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|n| (min..=max).contains(n));
    let range = match text.split_once('-') {
        Some((low, high)) => parse(low).zip(parse(high)).filter(|(l, h)| l <= h),
        None => parse(&text).map(|n| (n, n)),
    };
    if range.is_none() {
        reader.field_error(
            field,
            "expected a status (200) or a range (\"200-399\") within 100-599",
        );
    }
    range
}
