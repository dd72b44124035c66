//! A `[[pool]]`'s `discovery = { name, type, port, resolvers, interval,
//! min_ttl, nxdomain_hold, timeout }`: backends from DNS.

use crate::discovery::{DiscoverySpec, RecordType};
use crate::reader::{Field, Reader, Section};
use crate::validate::dns_name;
use std::net::{IpAddr, SocketAddr};

/// The pool's discovery: `None` when absent, `Some(None)` after recording
/// what is wrong.
pub(super) fn pool(reader: &mut Reader<'_>, s: &mut Section<'_, '_>) -> Option<Option<DiscoverySpec>> {
    let field = s.optional("discovery")?;
    Some(
        reader
            .table(&field)
            .and_then(|section| discovery(reader, section)),
    )
}

fn discovery(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<DiscoverySpec> {
    let name = s.required(reader, "name").and_then(|f| {
        let name = reader.str(&f)?.to_string();
        let checked = dns_name(&name);
        reader.checked(&f, name, checked)
    });
    let record = match s.optional("type") {
        Some(f) => reader.choice(&f, "type", &RecordType::ALL),
        None => Some(RecordType::A),
    };
    let port = match (s.optional("port"), record) {
        (Some(f), Some(RecordType::Srv)) => {
            reader.field_error(
                &f,
                "type = \"SRV\" takes each backend's port from its SRV record; remove port",
            );
            None
        }
        (Some(f), _) => reader.uint(&f, 1, u16::MAX.into()).map(|p| p as u16),
        (None, Some(RecordType::Srv)) => Some(0),
        (None, Some(r)) => {
            s.missing(
                reader,
                "port",
                &format!(
                    "type = \"{}\" needs the backends' port, e.g. port = 8080",
                    r.name()
                ),
            );
            None
        }
        (None, None) => None,
    };
    let resolvers = match s.optional("resolvers") {
        Some(f) => resolvers(reader, &f),
        None => Some(Vec::new()),
    };
    let mut duration = |key: &'static str, default| match s.optional(key) {
        Some(f) => reader.duration(&f),
        None => Some(default),
    };
    let interval = duration("interval", DiscoverySpec::DEFAULT_INTERVAL);
    let min_ttl = duration("min_ttl", DiscoverySpec::DEFAULT_MIN_TTL);
    let nxdomain_hold = duration("nxdomain_hold", DiscoverySpec::DEFAULT_NXDOMAIN_HOLD);
    let timeout = duration("timeout", DiscoverySpec::DEFAULT_TIMEOUT);
    s.finish(reader);
    Some(DiscoverySpec {
        name: name?,
        record: record?,
        port: port?,
        resolvers: resolvers?,
        interval: interval?,
        min_ttl: min_ttl?,
        nxdomain_hold: nxdomain_hold?,
        timeout: timeout?,
    })
}

/// `resolvers = ["IP:PORT", "IP", …]`: port 53 when not said.
fn resolvers(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<Vec<SocketAddr>> {
    let items = reader.array(field)?;
    if items.len() > DiscoverySpec::MAX_RESOLVERS {
        reader.field_error(
            field,
            format!("at most {} resolvers", DiscoverySpec::MAX_RESOLVERS),
        );
        return None;
    }
    let mut all = Some(Vec::with_capacity(items.len()));
    for item in &items {
        let Some(text) = reader.str(item) else {
            all = None;
            continue;
        };
        let parsed = text
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
            .filter(|a| a.port() != 0 && !a.ip().is_unspecified());
        match (parsed, all.as_mut()) {
            (Some(address), Some(list)) => list.push(address),
            (Some(_), None) => {}
            (None, _) => {
                reader.field_error(
                    item,
                    format!("\"{text}\" is not a resolver address (IP or IP:PORT, e.g. \"10.0.0.2:53\")"),
                );
                all = None;
            }
        }
    }
    all
}
