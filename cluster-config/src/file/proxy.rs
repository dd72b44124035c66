//! The PROXY protocol keys of a `[[listener]]` (`accept_proxy`,
//! `proxy_trusted`, and the HTTP option `trusted_proxies`) and of a
//! `[[pool]]` (`proxy_protocol`).

use crate::acl::Cidr;
use crate::limits::MAX_ACL_RULES;
use crate::proxy::ProxyVersion;
use crate::reader::{Field, Reader, Section};
use crate::spec::Protocol;

/// A listener's PROXY settings, as the spec holds them.
pub(super) struct ListenerProxy {
    pub proxy_trusted: Vec<Cidr>,
    pub trusted_proxies: Option<Vec<Cidr>>,
}

/// `accept_proxy = true` with its `proxy_trusted` networks (required, not
/// empty; not for UDP), and `trusted_proxies` (HTTP only).
pub(super) fn listener(
    reader: &mut Reader<'_>,
    s: &mut Section<'_, '_>,
    protocol: Option<Protocol>,
) -> Option<ListenerProxy> {
    let accept_field = s.optional("accept_proxy");
    let accept = match &accept_field {
        Some(f) => reader.bool(f)?,
        None => false,
    };
    if let (Some(f), Some(Protocol::Udp), true) = (&accept_field, protocol, accept) {
        reader.field_error(
            f,
            "only applies to tcp, http and https listeners, this one is udp",
        );
        return None;
    }
    let trusted_field = s.optional("proxy_trusted");
    let proxy_trusted = match (&trusted_field, accept) {
        (Some(f), true) => {
            let networks = cidrs(reader, f)?;
            if networks.is_empty() {
                reader.field_error(
                    f,
                    "must name at least one network: the sources trusted to send a PROXY header",
                );
                return None;
            }
            networks
        }
        (Some(f), false) => {
            reader.field_error(f, "only applies with accept_proxy = true");
            return None;
        }
        (None, true) => {
            s.missing(
                reader,
                "proxy_trusted",
                "accept_proxy = true needs the sources trusted to send a PROXY header, e.g. proxy_trusted = [\"10.0.0.0/8\"]",
            );
            return None;
        }
        (None, false) => Vec::new(),
    };
    let trusted_proxies = match s.optional("trusted_proxies") {
        Some(f) if protocol.is_some_and(|p| !p.is_http()) => {
            let p = protocol.map_or("", Protocol::name);
            reader.field_error(&f, format!("only applies to http listeners, this one is {p}"));
            return None;
        }
        Some(f) => Some(cidrs(reader, &f)?),
        None => None,
    };
    Some(ListenerProxy {
        proxy_trusted,
        trusted_proxies,
    })
}

/// `proxy_protocol = "v1" | "v2"`: the header a pool's backends are sent.
pub(super) fn pool(reader: &mut Reader<'_>, s: &mut Section<'_, '_>) -> Option<Option<ProxyVersion>> {
    match s.optional("proxy_protocol") {
        Some(f) => reader.choice(&f, "proxy_protocol", &ProxyVersion::ALL).map(Some),
        None => Some(None),
    }
}

/// An array of networks (`"10.0.0.0/8"`, or a bare address), each once.
fn cidrs(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<Vec<Cidr>> {
    let items = reader.array(field)?;
    if items.len() > MAX_ACL_RULES {
        reader.field_error(field, format!("at most {MAX_ACL_RULES} networks"));
        return None;
    }
    let mut networks = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in &items {
        let network = reader
            .str(item)
            .and_then(|text| reader.checked(item, text, text.parse::<Cidr>().map(drop)))
            .and_then(|text| text.parse::<Cidr>().ok());
        match network {
            Some(network) if networks.contains(&network) => {
                reader.field_error(item, format!("{network} is listed twice"));
                ok = false;
            }
            Some(network) => networks.push(network),
            None => ok = false,
        }
    }
    ok.then_some(networks)
}
