//! The QUIC keys of a `[[listener]]`: `http3`, `http3_bind`,
//! `http3_early_data` and `http3_retry_threshold` (https), `quic` (udp).

use crate::limits::MAX_CONNECTIONS;
use crate::quic::QuicSpec;
use crate::reader::{Reader, Section};
use crate::spec::Protocol;

/// A listener's QUIC settings, or `None` after recording what is wrong.
pub(super) fn listener(
    reader: &mut Reader<'_>,
    s: &mut Section<'_, '_>,
    protocol: Option<Protocol>,
) -> Option<QuicSpec> {
    let mut quic = QuicSpec::default();
    let mut ok = true;
    // Whether `http3` said something (a bad value is reported once).
    let mut http3_said = true;
    if let Some(f) = s.optional("http3") {
        match reader.bool(&f) {
            Some(on) => quic.http3 = on,
            None => (ok, http3_said) = (false, false),
        }
        if protocol.is_some_and(|p| p != Protocol::Https) {
            let p = protocol.map_or("", Protocol::name);
            reader.field_error(&f, format!("only applies to https listeners, this one is {p}"));
            ok = false;
        }
    }
    for key in ["http3_bind", "http3_early_data", "http3_retry_threshold"] {
        let Some(f) = s.optional(key) else { continue };
        if !quic.http3 {
            if http3_said {
                reader.field_error(&f, "only applies with http3 = true");
            }
            ok = false;
            continue;
        }
        let read = match key {
            "http3_bind" => reader.socket_addr(&f).map(|a| quic.http3_bind = Some(a)),
            "http3_early_data" => reader.bool(&f).map(|b| quic.early_data = b),
            _ => reader
                .uint(&f, 0, MAX_CONNECTIONS.into())
                .map(|n| quic.retry_threshold = n as u32),
        };
        ok &= read.is_some();
    }
    if let Some(f) = s.optional("quic") {
        match reader.bool(&f) {
            Some(on) => quic.route_by_connection_id = on,
            None => ok = false,
        }
        if protocol.is_some_and(|p| p != Protocol::Udp) {
            let p = protocol.map_or("", Protocol::name);
            reader.field_error(&f, format!("only applies to udp listeners, this one is {p}"));
            ok = false;
        }
    }
    ok.then_some(quic)
}
