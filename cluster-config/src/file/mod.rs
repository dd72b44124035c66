//! The configuration file's schema, one function per section. Each function
//! reads its keys through the [`Reader`], which records every problem, and
//! returns the typed spec when its own section was sound; `sticky` holds
//! the `[pool.sticky]` section.

use crate::backend_limits::ConnectionLimits;
use crate::client_limits::ClientLimits;
use crate::error::{ConfigError, ConfigErrors};
use crate::limits::{
    MAX_BACKENDS_PER_POOL, MAX_BODY_BYTES, MAX_CONNECT_ATTEMPTS, MAX_CONNECTIONS, MAX_HEADER_BYTES,
    MAX_HEADERS, MAX_NODE_ID, MAX_ROUTES, MIN_HEADER_BYTES,
};
use crate::limits::{MAX_BODY_MIN_RATE, MAX_CONCURRENT_STREAMS};
use crate::reader::{Field, Reader, Section};
use crate::spec::{
    AdminState, BackendProtocol, BackendSpec, ClusterSpec, Config, HttpLimits, ListenerSpec, MembershipSpec,
    NodeSpec, PoolSpec, Protocol, Role,
};
use crate::validate;
use access_log::access_log;
use across::{ListenerSite, PoolSite, Site};
use backend_tls::backend_tls;
use certificate::certificate_file;
use cluster::membership;
use sticky::sticky;
use toml::de::DeTable;
use vip::vip;

mod access_log;
mod across;
mod backend_tls;
mod balance;
mod certificate;
mod client;
mod cluster;
mod discovery;
mod gslb;
mod health;
mod proxy;
mod quic;
mod route;
mod sticky;
mod vip;

pub(crate) fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    let document = DeTable::parse(text).map_err(|e| syntax_error(file, text, &e))?;
    let mut reader = Reader::new(file, text);
    let mut root = Section::root(&document);

    let node = root
        .required(&mut reader, "node")
        .and_then(|f| reader.table(&f))
        .and_then(|section| node(&mut reader, section));
    let membership = match root.optional("cluster") {
        Some(f) => reader
            .table(&f)
            .and_then(|section| membership(&mut reader, section, node.as_ref())),
        None => Some(MembershipSpec::standalone()),
    };
    let pools = each(&mut reader, root.optional("pool"), pool);
    let listeners = each(&mut reader, root.optional("listener"), listener);
    let vip_fields = root.optional("vip");
    if let (
        Some(f),
        Some(NodeSpec {
            role: Role::Witness, ..
        }),
    ) = (&vip_fields, &node)
    {
        reader.field_error(
            f,
            "a witness owns no VIP (it runs no data plane); remove [[vip]] or set role = \"balancer\"",
        );
    }
    let vips = each(&mut reader, vip_fields, vip);
    let certificate_files = each(&mut reader, root.optional("certificate"), certificate_file);
    let gslb = root.optional("gslb").and_then(|f| gslb::gslb(&mut reader, &f));
    root.finish(&mut reader);

    across::cluster(&mut reader, &listeners, &pools);
    let cluster = ClusterSpec {
        listeners: listeners.into_iter().filter_map(|(spec, _)| spec).collect(),
        pools: pools.into_iter().filter_map(|(spec, _)| spec).collect(),
        gslb,
    };
    match node.zip(membership) {
        Some((node, membership)) => reader.finish(Config {
            node,
            membership,
            cluster,
            vips: vips.into_iter().flatten().collect(),
            certificate_files: certificate_files.into_iter().flatten().collect(),
        }),
        None => reader.finish(()).and_then(|()| unreachable_missing_node(file)),
    }
    .and_then(|config| seeds_a_cluster(file, config))
}

/// The typed validation of what the file built, so that a file that parses
/// seeds a cluster `apply` accepts, whatever check the sections above
/// might lack (they report the same problems with lines, so this only
/// speaks when they missed one).
fn seeds_a_cluster(file: &str, config: Config) -> Result<Config, ConfigErrors> {
    match validate::cluster(&config.cluster) {
        Ok(()) => Ok(config),
        Err(invalid) => Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: None,
            path: String::new(),
            message: invalid.0,
        }])),
    }
}

/// `node` is only `None` after an error was recorded; this keeps that
/// invariant from turning into a panic if it is ever broken.
fn unreachable_missing_node(file: &str) -> Result<Config, ConfigErrors> {
    Err(ConfigErrors(vec![ConfigError {
        file: file.to_string(),
        line: None,
        path: "node".to_string(),
        message: "missing or invalid [node] section".to_string(),
    }]))
}

fn syntax_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigErrors {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    ConfigErrors(vec![ConfigError {
        file: file.to_string(),
        line,
        path: String::new(),
        message: format!("TOML syntax error: {}", e.message().trim_end()),
    }])
}

/// Reads an array of tables (`[[pool]]` or inline tables), one entry per element.
fn each<'t, 'i, T>(
    reader: &mut Reader<'_>,
    field: Option<Field<'t, 'i>>,
    read: impl Fn(&mut Reader<'_>, Section<'t, 'i>) -> T,
) -> Vec<T> {
    let Some(items) = field.and_then(|f| reader.array(&f)) else {
        return Vec::new();
    };
    let mut read_all = Vec::with_capacity(items.len());
    for item in &items {
        if let Some(section) = reader.table(item) {
            read_all.push(read(reader, section));
        }
    }
    read_all
}

fn node(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<NodeSpec> {
    let id = s
        .required(reader, "id")
        .and_then(|f| reader.uint(&f, 1, MAX_NODE_ID));
    let data_dir = s.optional("data_dir").map(|f| reader.str(&f).map(str::to_string));
    let drain_timeout = s.optional("drain_timeout").map(|f| reader.duration(&f));
    let bind_ip = s.optional("bind_ip").map(|f| {
        let text = reader.str(&f)?;
        let parsed = text.parse::<std::net::IpAddr>().ok();
        if parsed.is_none() {
            reader.field_error(&f, format!("invalid IP address \"{text}\""));
        }
        parsed
    });
    let role = match s.optional("role") {
        Some(f) => reader.choice(
            &f,
            "role",
            &[("balancer", Role::Balancer), ("witness", Role::Witness)],
        ),
        None => Some(Role::Balancer),
    };
    let metrics = s.optional("metrics").map(|f| reader.socket_addr(&f));
    let status_token_file = s.optional("status_token_file").map(|f| {
        let path = reader.str(&f)?;
        if path.is_empty() {
            reader.field_error(&f, "an empty path; name the file holding the status page's token");
            return None;
        }
        Some(path.to_string())
    });
    let access_log = s
        .optional("access_log")
        .map(|f| reader.table(&f).and_then(|t| access_log(reader, t)));
    s.finish(reader);
    let id = id?;
    Some(NodeSpec {
        role: role?,
        id,
        data_dir: data_dir.unwrap_or_else(|| Some(format!("./data/node{id}")))?,
        drain_timeout: drain_timeout.unwrap_or(Some(NodeSpec::DEFAULT_DRAIN_TIMEOUT))?,
        bind_ip: match bind_ip {
            Some(parsed) => Some(parsed?),
            None => None,
        },
        metrics: match metrics {
            Some(parsed) => Some(parsed?),
            None => None,
        },
        status_token_file: match status_token_file {
            Some(parsed) => Some(parsed?),
            None => None,
        },
        access_log: match access_log {
            Some(parsed) => Some(parsed?),
            None => None,
        },
    })
}

const HTTP_ONLY_KEYS: [&str; 12] = [
    "header_read_timeout",
    "keepalive_timeout",
    "max_header_bytes",
    "max_headers",
    "max_body_bytes",
    "body_timeout",
    "body_min_rate",
    "send_timeout",
    "max_backend_streams",
    "tunnel_idle_timeout",
    "upgrades",
    "access_log",
];

fn listener(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> (Option<ListenerSpec>, ListenerSite) {
    let name = s.required(reader, "name");
    let name_value = name.as_ref().and_then(|f| reader.str(f)).map(str::to_string);
    if let (Some(f), Some(n)) = (&name, &name_value) {
        across::name(reader, f, n);
    }
    let protocol = s
        .required(reader, "protocol")
        .and_then(|f| reader.choice(&f, "protocol", &Protocol::ALL));
    let bind_field = s.required(reader, "bind");
    let bind = bind_field.as_ref().and_then(|f| reader.socket_addr(f));
    let pool_field = s.optional("pool");
    let pool = pool_field
        .as_ref()
        .and_then(|f| reader.str(f))
        .map(str::to_string);
    let route_field = s.optional("route");
    let mut route_pools = Vec::new();
    let routes = match &route_field {
        Some(f) => reader.array(f).map(|items| {
            if items.len() > MAX_ROUTES {
                reader.field_error(f, format!("a listener has at most {MAX_ROUTES} routes"));
                return None;
            }
            let parsed: Vec<_> = items
                .iter()
                .map(|item| match reader.table(item) {
                    Some(section) => {
                        let (spec, site) = route::route(reader, section);
                        route_pools.extend(site);
                        spec
                    }
                    None => None,
                })
                .collect();
            parsed.into_iter().collect::<Option<Vec<_>>>()
        }),
        None => Some(Some(Vec::new())),
    }
    .flatten();
    match (protocol, &pool_field, &route_field) {
        (Some(p), None, None) if p.is_http() => s.missing(
            reader,
            "pool",
            "an http listener needs a pool (where requests go by default), routes ([[listener.route]]), or both",
        ),
        (Some(p), None, _) if !p.is_http() => s.missing(reader, "pool", "missing required key"),
        (Some(p), _, Some(f)) if !p.is_http() => {
            reader.field_error(f, format!("routes only apply to http listeners, this one is {}", p.name()));
        }
        _ => {}
    }
    let max_connections = s
        .optional("max_connections")
        .map(|f| reader.uint(&f, 1, MAX_CONNECTIONS.into()).map(|n| n as u32));
    let idle_timeout_field = s.optional("idle_timeout");
    let idle_timeout = idle_timeout_field.as_ref().map(|f| reader.duration(f));
    if let (Some(f), Some(true)) = (&idle_timeout_field, protocol.map(Protocol::is_http)) {
        reader.field_error(
            f,
            "does not apply to http listeners: keepalive_timeout bounds their idle time, header_read_timeout the wait for a head",
        );
    }

    let limits = s.optional("limits").map(|f| client::limits(reader, &f));
    let acl = s.optional("acl").map(|f| client::acl(reader, &f));

    let mut http = HttpLimits::default();
    let mut http_ok = true;
    let mut http_keys = Vec::new();
    for key in HTTP_ONLY_KEYS {
        if let Some(f) = s.optional(key) {
            let ok = match key {
                "header_read_timeout" => reader.duration(&f).map(|d| http.header_read_timeout = d),
                "keepalive_timeout" => reader.duration(&f).map(|d| http.keepalive_timeout = d),
                "max_header_bytes" => reader
                    .uint(&f, MIN_HEADER_BYTES as u64, MAX_HEADER_BYTES as u64)
                    .map(|n| http.max_header_bytes = n as usize),
                "max_headers" => reader
                    .uint(&f, 1, MAX_HEADERS as u64)
                    .map(|n| http.max_headers = n as usize),
                "max_body_bytes" => reader
                    .uint(&f, 1, MAX_BODY_BYTES)
                    .map(|n| http.max_body_bytes = n),
                "tunnel_idle_timeout" => reader.duration(&f).map(|d| http.tunnel_idle_timeout = d),
                "body_timeout" => reader.duration(&f).map(|d| http.body_timeout = d),
                "body_min_rate" => reader
                    .uint(&f, 0, MAX_BODY_MIN_RATE.into())
                    .map(|n| http.body_min_rate = n as u32),
                "send_timeout" => reader.duration(&f).map(|d| http.send_timeout = d),
                "max_backend_streams" => reader
                    .uint(&f, 1, MAX_CONCURRENT_STREAMS.into())
                    .map(|n| http.max_backend_streams = n as u32),
                "upgrades" => client::upgrades(reader, &f).map(|u| http.upgrades = u),
                _ => reader.bool(&f).map(|b| http.access_log = b),
            };
            http_ok &= ok.is_some();
            http_keys.push(f);
        }
    }
    if let Some(p) = protocol.filter(|p| !p.is_http()) {
        for f in &http_keys {
            reader.field_error(
                f,
                format!("only applies to http listeners, this one is {}", p.name()),
            );
        }
    }
    // Keys for one of the two HTTP protocols only.
    for (key, only) in [
        ("default_certificate", Protocol::Https),
        ("redirect_https", Protocol::Http),
    ] {
        let Some(f) = s.optional(key) else { continue };
        if protocol.is_some_and(|p| p != only) {
            reader.field_error(&f, format!("only applies to {} listeners", only.name()));
            http_ok = false;
            continue;
        }
        let ok = match key {
            "default_certificate" => reader
                .str(&f)
                .and_then(|n| reader.checked(&f, n, validate::name(n)))
                .map(|n| http.default_certificate = Some(n.to_string())),
            _ => reader.bool(&f).map(|b| http.redirect_https = b),
        };
        http_ok &= ok.is_some();
    }
    let proxy = proxy::listener(reader, &mut s, protocol);
    let quic = quic::listener(reader, &mut s, protocol);
    s.finish(reader);

    let site = ListenerSite {
        name: name
            .as_ref()
            .zip(name_value.clone())
            .map(|(f, n)| Site::new(f, n)),
        bind: bind_field
            .as_ref()
            .zip(bind)
            .zip(protocol)
            .map(|((f, b), p)| (Site::new(f, b.to_string()), b, p)),
        pool: pool_field
            .as_ref()
            .zip(pool.clone())
            .map(|(f, p)| Site::new(f, p)),
        route_pools,
    };
    let spec = (|| {
        let protocol = protocol?;
        http_ok.then_some(())?;
        let proxy = proxy?;
        http.trusted_proxies = proxy.trusted_proxies;
        Some(ListenerSpec {
            name: name_value?,
            protocol,
            bind: bind?,
            pool: match pool_field {
                Some(_) => Some(pool?),
                None => None,
            },
            routes: routes?,
            max_connections: max_connections.unwrap_or(Some(ListenerSpec::DEFAULT_MAX_CONNECTIONS))?,
            idle_timeout: idle_timeout.unwrap_or(Some(ListenerSpec::default_idle_timeout(protocol)))?,
            http,
            limits: limits.unwrap_or(Some(ClientLimits::default()))?,
            acl: acl.unwrap_or(Some(Vec::new()))?,
            proxy_trusted: proxy.proxy_trusted,
            quic: quic?,
        })
    })();
    (spec, site)
}

fn pool(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> (Option<PoolSpec>, PoolSite) {
    let name = s.required(reader, "name");
    let name_value = name.as_ref().and_then(|f| reader.str(f)).map(str::to_string);
    if let (Some(f), Some(n)) = (&name, &name_value) {
        across::name(reader, f, n);
    }
    let (algorithm, hash_key) = balance::algorithm(reader, &mut s);
    let connect_timeout = s.optional("connect_timeout").map(|f| reader.duration(&f));
    let response_timeout = s.optional("response_timeout").map(|f| reader.duration(&f));
    let max_connect_attempts = s
        .optional("max_connect_attempts")
        .map(|f| reader.uint(&f, 1, MAX_CONNECT_ATTEMPTS.into()).map(|n| n as u32));
    let discovery = discovery::pool(reader, &mut s);
    let backends_field = match discovery {
        Some(_) => s.optional("backends"),
        None => s.required(reader, "backends"),
    };
    let backends = backends_field.map_or(Some(Vec::new()), |f| {
        let items = reader.array(&f)?;
        if items.is_empty() && discovery.is_none() {
            reader.field_error(&f, "a pool needs at least one backend");
            return None;
        }
        if items.len() > MAX_BACKENDS_PER_POOL {
            reader.field_error(&f, format!("a pool has at most {MAX_BACKENDS_PER_POOL} backends"));
            return None;
        }
        let parsed: Vec<_> = items
            .iter()
            .map(|item| reader.table(item).and_then(|section| backend(reader, section)))
            .collect();
        across::distinct_backends(reader, &items, &parsed);
        parsed.into_iter().collect::<Option<Vec<_>>>()
    });
    let sticky = s
        .optional("sticky")
        .map(|f| reader.table(&f).and_then(|section| sticky(reader, section)));
    let backend_protocol = match s.optional("backend_protocol") {
        Some(f) => reader.choice(&f, "backend_protocol", &BackendProtocol::ALL),
        None => Some(BackendProtocol::Http1),
    };
    let tls = s
        .optional("tls")
        .map(|f| reader.table(&f).and_then(|section| backend_tls(reader, section)));
    let health = health::pool_health(reader, &mut s);
    let limits = connection_limits(reader, &mut s);
    let proxy_protocol = proxy::pool(reader, &mut s);
    s.finish(reader);

    let site = PoolSite {
        name: name
            .as_ref()
            .zip(name_value.clone())
            .map(|(f, n)| Site::new(f, n)),
    };
    let spec = (|| {
        Some(PoolSpec {
            name: name_value?,
            algorithm: algorithm?,
            hash_key: hash_key?,
            backends: backends?,
            connect_timeout: connect_timeout.unwrap_or(Some(PoolSpec::DEFAULT_CONNECT_TIMEOUT))?,
            response_timeout: response_timeout.unwrap_or(Some(PoolSpec::DEFAULT_RESPONSE_TIMEOUT))?,
            max_connect_attempts: max_connect_attempts
                .unwrap_or(Some(PoolSpec::DEFAULT_MAX_CONNECT_ATTEMPTS))?,
            sticky: match sticky {
                Some(policy) => Some(policy?),
                None => None,
            },
            tls: match tls {
                Some(tls) => Some(tls?),
                None => None,
            },
            backend_protocol: backend_protocol?,
            health: health?,
            limits: limits?,
            proxy_protocol: proxy_protocol?,
            discovery: match discovery {
                Some(discovery) => Some(discovery?),
                None => None,
            },
            discovery_status: Default::default(),
        })
    })();
    (spec, site)
}

fn backend(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<BackendSpec> {
    let address = s.required(reader, "address").and_then(|f| reader.socket_addr(&f));
    let weight = match s.optional("weight") {
        Some(f) => reader.uint(&f, 0, BackendSpec::MAX_WEIGHT.into()).and_then(|w| {
            if w == 0 {
                reader.field_error(
                    &f,
                    "weight 0 is not allowed: a backend's weight is its share of traffic, at least 1 (remove the backend to stop its traffic)",
                );
                return None;
            }
            Some(w as u32)
        }),
        None => Some(BackendSpec::DEFAULT_WEIGHT),
    };
    let state = match s.optional("state") {
        Some(f) => reader.choice(&f, "state", &AdminState::ALL),
        None => Some(AdminState::Enabled),
    };
    let max_connections = s.optional("max_connections").map(|f| {
        reader
            .uint(&f, 0, ConnectionLimits::MAX_CONNECTIONS.into())
            .map(|n| n as u32)
    });
    s.finish(reader);
    Some(BackendSpec {
        address: address?,
        weight: weight?,
        state: state?,
        max_connections: match max_connections {
            Some(n) => Some(n?),
            None => None,
        },
        discovered: false,
    })
}

/// A pool's `max_connections` (per backend), `max_queue`, `queue_timeout`.
fn connection_limits(reader: &mut Reader<'_>, s: &mut Section<'_, '_>) -> Option<ConnectionLimits> {
    let max_connections = s.optional("max_connections").map(|f| {
        reader
            .uint(&f, 0, ConnectionLimits::MAX_CONNECTIONS.into())
            .map(|n| n as u32)
    });
    let max_queue = s.optional("max_queue").map(|f| {
        reader
            .uint(&f, 0, ConnectionLimits::MAX_QUEUE.into())
            .map(|n| n as u32)
    });
    let queue_timeout = s.optional("queue_timeout").map(|f| reader.duration(&f));
    let defaults = ConnectionLimits::default();
    Some(ConnectionLimits {
        max_connections: max_connections.unwrap_or(Some(defaults.max_connections))?,
        max_queue: max_queue.unwrap_or(Some(defaults.max_queue))?,
        queue_timeout: queue_timeout.unwrap_or(Some(defaults.queue_timeout))?,
    })
}
