//! One [`Record`] as one line of text, in either format:
//!
//! - **combined**: Apache's and nginx's `combined` (`%h %l %u %t "%r" %>s
//!   %b "%{Referer}i" "%{User-agent}i"`), then `key=value` fields as nginx
//!   users append them: `rt uct uht rid backend listener pool sticky
//!   retries tls sni` (`-` when none). Quoted fields escape `"` and `\`
//!   with a backslash and any other byte outside printable ASCII as
//!   `\xHH` (Apache's rule), so a line is always one line. An L4
//!   connection's request is `"- - TCP"` and its status `-`.
//! - **json**: one object per line, field names in [`JsonLine`].
//!   Text that is not UTF-8 keeps its other bytes as `\xHH`.

use super::record::Record;
use http::Version;
use serde::Serialize;
use std::borrow::Cow;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

/// Appends `record` in the combined format, with a newline, to `out`.
pub fn combined(record: &Record, out: &mut String) {
    let (method, target, protocol, status) = match (&record.request, record.status) {
        (Some(r), status) => (
            r.method.as_str(),
            target(&r.target),
            protocol(r.version),
            status.map_or(Cow::Borrowed("-"), |s| Cow::Owned(s.to_string())),
        ),
        (None, _) => ("-", Cow::Borrowed("-"), "TCP", Cow::Borrowed("-")),
    };
    let header = |pick: fn(&super::record::HttpRequest) -> Option<&http::HeaderValue>| {
        record
            .request
            .as_ref()
            .and_then(pick)
            .map_or(&b"-"[..], |v| v.as_bytes())
    };
    let _ = write!(out, "{} - - [{}] \"", record.client.ip(), clf_time(record.time));
    quoted(out, method.as_bytes());
    out.push(' ');
    quoted(out, target.as_bytes());
    let _ = write!(out, " {protocol}\" {status} {} \"", record.sent);
    quoted(out, header(|r| r.referer.as_ref()));
    out.push_str("\" \"");
    quoted(out, header(|r| r.user_agent.as_ref()));
    let _ = write!(
        out,
        "\" rt={:.3} uct={} uht={} rid=",
        record.total.as_secs_f64(),
        seconds(record.connect),
        seconds(record.first_byte),
    );
    quoted(
        out,
        record.request.as_ref().map_or(&b"-"[..], |r| r.id.as_bytes()),
    );
    let _ = write!(
        out,
        " backend={} listener={} pool={} sticky={} retries={} tls={} sni=",
        record
            .backend
            .map_or(Cow::Borrowed("-"), |b| Cow::Owned(b.to_string())),
        record.listener.spec.name,
        record.pool.as_ref().map_or("-", |p| p.spec.name.as_str()),
        record.sticky.name(),
        record.retries,
        record.tls.as_ref().map_or("-", |t| t.version),
    );
    let sni = record.tls.as_ref().and_then(|t| t.sni.as_deref());
    quoted(out, sni.unwrap_or("-").as_bytes());
    out.push('\n');
}

/// The fields of a json line, in order. Absent values are `null`.
#[derive(Debug, Serialize)]
pub struct JsonLine<'a> {
    /// RFC 3339, UTC, milliseconds: when the request head was read (L4:
    /// the connection accepted).
    pub time: String,
    pub request_id: Option<Cow<'a, str>>,
    pub client: String,
    pub client_port: u16,
    pub listener: &'a str,
    pub pool: Option<&'a str>,
    pub backend: Option<String>,
    pub method: Option<&'a str>,
    /// The request target, path and query.
    pub path: Option<Cow<'a, str>>,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`, or `TCP`.
    pub protocol: &'static str,
    pub status: Option<u16>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub connect_seconds: Option<f64>,
    pub first_byte_seconds: Option<f64>,
    pub total_seconds: f64,
    pub tls_version: Option<&'static str>,
    pub sni: Option<&'a str>,
    /// `hit`, `miss` or `none`.
    pub sticky: &'static str,
    pub retries: u32,
    pub referer: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
}

/// Appends `record` as one JSON object, with a newline, to `out`.
pub fn json(record: &Record, out: &mut String) {
    let request = record.request.as_ref();
    let line = JsonLine {
        time: rfc3339(record.time),
        request_id: request.map(|r| text(r.id.as_bytes())),
        client: record.client.ip().to_string(),
        client_port: record.client.port(),
        listener: &record.listener.spec.name,
        pool: record.pool.as_ref().map(|p| p.spec.name.as_str()),
        backend: record.backend.map(|b| b.to_string()),
        method: request.map(|r| r.method.as_str()),
        path: request.map(|r| target(&r.target)),
        protocol: request.map_or("TCP", |r| protocol(r.version)),
        status: record.status,
        bytes_received: record.received,
        bytes_sent: record.sent,
        connect_seconds: record.connect.map(|d| d.as_secs_f64()),
        first_byte_seconds: record.first_byte.map(|d| d.as_secs_f64()),
        total_seconds: record.total.as_secs_f64(),
        tls_version: record.tls.as_ref().map(|t| t.version),
        sni: record.tls.as_ref().and_then(|t| t.sni.as_deref()),
        sticky: record.sticky.name(),
        retries: record.retries,
        referer: request
            .and_then(|r| r.referer.as_ref())
            .map(|v| text(v.as_bytes())),
        user_agent: request
            .and_then(|r| r.user_agent.as_ref())
            .map(|v| text(v.as_bytes())),
    };
    // Serializing plain fields into a String cannot fail.
    if let Ok(text) = serde_json::to_string(&line) {
        out.push_str(&text);
        out.push('\n');
    }
}

/// The request target as sent: origin form (HTTP/2: its `:path`), else
/// whatever the target is (authority form).
fn target(uri: &http::Uri) -> Cow<'_, str> {
    match uri.path_and_query() {
        Some(pq) => Cow::Borrowed(pq.as_str()),
        None => Cow::Owned(uri.to_string()),
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn seconds(d: Option<Duration>) -> Cow<'static, str> {
    d.map_or(Cow::Borrowed("-"), |d| {
        Cow::Owned(format!("{:.3}", d.as_secs_f64()))
    })
}

/// Appends `bytes` escaped for a quoted combined field.
fn quoted(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
}

/// `bytes` as text: itself when UTF-8, else with each byte of an invalid
/// sequence written `\xHH`.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    Cow::Owned(out)
}

fn utc(time: SystemTime) -> time::OffsetDateTime {
    let nanos = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `10/Oct/2000:13:55:36 +0000`.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = utc(time);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2000-10-10T13:55:36.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let t = utc(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
