//! The file's checks that look across entries: names well formed and
//! unique, listeners pointing at pools that exist, no two listeners on one
//! socket, no backend twice in a pool. Each takes the [`Site`] (path and
//! span) of what it checks, so its errors carry the line like every other.

use crate::reader::{Field, Reader};
use crate::spec::{BackendSpec, ListenerSpec, PoolSpec, Protocol, binds_overlap};
use crate::validate;
use std::net::SocketAddr;
use std::ops::Range;

/// Where a value was written and what it said.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    path: String,
    span: Range<usize>,
    text: String,
}

impl Site {
    pub fn new(field: &Field<'_, '_>, text: String) -> Self {
        Site {
            path: field.path.clone(),
            span: field.span(),
            text,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ListenerSite {
    pub name: Option<Site>,
    pub bind: Option<(Site, SocketAddr, Protocol)>,
    pub pool: Option<Site>,
    /// Where each route named its pool.
    pub route_pools: Vec<Site>,
}

#[derive(Debug)]
pub(crate) struct PoolSite {
    pub name: Option<Site>,
}

/// Names are identifiers operators type in commands (see [`validate::name`]).
pub(crate) fn name(reader: &mut Reader<'_>, field: &Field<'_, '_>, name: &str) {
    if let Err(why) = validate::name(name) {
        reader.field_error(field, why);
    }
}

pub(crate) fn cluster(
    reader: &mut Reader<'_>,
    listeners: &[(Option<ListenerSpec>, ListenerSite)],
    pools: &[(Option<PoolSpec>, PoolSite)],
) {
    let pool_names: Vec<&Site> = pools.iter().filter_map(|(_, site)| site.name.as_ref()).collect();
    unique(reader, "pool", &pool_names);
    let listener_names: Vec<&Site> = listeners
        .iter()
        .filter_map(|(_, site)| site.name.as_ref())
        .collect();
    unique(reader, "listener", &listener_names);

    for (_, site) in listeners {
        for pool in site.pool.iter().chain(&site.route_pools) {
            if pool_names.iter().any(|p| p.text == pool.text) {
                continue;
            }
            let known: Vec<String> = pool_names.iter().map(|p| format!("\"{}\"", p.text)).collect();
            let known = if known.is_empty() {
                "none defined".to_string()
            } else {
                known.join(", ")
            };
            reader.error(
                pool.span.clone(),
                &pool.path,
                format!("no pool named \"{}\" (pools: {known})", pool.text),
            );
        }
    }

    for (listener, site) in listeners {
        let (Some(listener), Some(pool_site)) = (listener, &site.pool) else {
            continue;
        };
        let pool = pools
            .iter()
            .filter_map(|(pool, _)| pool.as_ref())
            .find(|pool| Some(&pool.name) == listener.pool.as_ref());
        if let Some(key) = pool.and_then(|p| p.algorithm.hash_key(&p.hash_key))
            && key.needs_http()
            && !listener.protocol.is_http()
        {
            reader.error(
                pool_site.span.clone(),
                &pool_site.path,
                format!(
                    "pool \"{}\" hashes hash_key = \"{key}\", which a {} listener cannot see; use hash_key = \"source_ip\"",
                    pool_site.text,
                    listener.protocol.name()
                ),
            );
        }
        let sticky = pool.and_then(|pool| pool.sticky.as_ref());
        if let Some(sticky) = sticky
            && sticky.kind.needs_http()
            && !listener.protocol.is_http()
        {
            reader.error(
                pool_site.span.clone(),
                &pool_site.path,
                format!(
                    "pool \"{}\" keeps sessions by {} (kind = \"{}\"), which a {} listener cannot see; use kind = \"source_ip\"",
                    pool_site.text,
                    if sticky.kind == crate::sticky::StickyKind::Header { "header" } else { "cookie" },
                    sticky.kind.name(),
                    listener.protocol.name()
                ),
            );
        }
    }

    let binds: Vec<&(Site, SocketAddr, Protocol)> =
        listeners.iter().filter_map(|(_, s)| s.bind.as_ref()).collect();
    for (i, (site, addr, protocol)) in binds.iter().enumerate() {
        let earlier = binds[..i]
            .iter()
            .find(|(_, other, other_protocol)| binds_overlap((*protocol, *addr), (*other_protocol, *other)));
        if let Some((first, _, _)) = earlier {
            let transport = if protocol.is_stream() { "TCP" } else { "UDP" };
            reader.error(
                site.span.clone(),
                &site.path,
                format!(
                    "{transport} address \"{}\" conflicts with {} \"{}\"",
                    site.text, first.path, first.text
                ),
            );
        }
    }
}

fn unique(reader: &mut Reader<'_>, what: &str, names: &[&Site]) {
    for (i, site) in names.iter().enumerate() {
        if let Some(first) = names[..i].iter().find(|other| other.text == site.text) {
            reader.error(
                site.span.clone(),
                &site.path,
                format!(
                    "duplicate {what} name \"{}\" (first used at {})",
                    site.text, first.path
                ),
            );
        }
    }
}

pub(crate) fn distinct_backends(
    reader: &mut Reader<'_>,
    items: &[Field<'_, '_>],
    parsed: &[Option<BackendSpec>],
) {
    let mut first_at: std::collections::HashMap<std::net::SocketAddr, usize> =
        std::collections::HashMap::new();
    for (i, backend) in parsed.iter().enumerate() {
        let Some(backend) = backend else { continue };
        if let Some(&first) = first_at.get(&backend.address) {
            reader.field_error(
                &items[i],
                format!(
                    "backend {} is listed twice (also at index {first})",
                    backend.address
                ),
            );
        } else {
            first_at.insert(backend.address, i);
        }
    }
}
