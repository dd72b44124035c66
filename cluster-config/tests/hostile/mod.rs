//! Hostile commands for property tests: every variant, batches nested one
//! level deeper than allowed, extreme numbers and durations, empty, odd and
//! huge names, duplicate addresses, pools that do not exist. Each value is
//! a plausible one more often than not, so many commands apply and the
//! state moves (the example config's names and ports are the plausible ones).

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use raftlb_config::limits::{MAX_DURATION, MAX_PEM_BYTES};
use raftlb_config::route::{RouteMatch, RouteSpec};
use raftlb_config::sticky::{CookieAttributes, SameSite};
use raftlb_config::{
    AclAction, AclRule, AdminState, Algorithm, BackendProtocol, BackendSpec, BackendTls, Certificate, Cidr,
    ClientLimits, ClusterSpec, Command, HashKey, HealthCheck, HttpLimits, HttpProbe, ListenerSpec,
    OutlierDetection, PoolHealth, PoolSpec, Probe, Protocol, RetryPolicy, StickyChange, StickyContract,
    StickyKey, StickyKind, StickyPolicy, StickySecret,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Any command, batches nested up to three deep.
pub fn command() -> impl Strategy<Value = Command> {
    leaf().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Command::Batch),
            vec(inner, 0..6).prop_map(Command::Independent),
        ]
    })
}

fn leaf() -> impl Strategy<Value = Command> {
    prop_oneof![
        cluster().prop_map(Command::Bootstrap),
        listener().prop_map(Command::AddListener),
        listener().prop_map(Command::UpdateListener),
        name().prop_map(|name| Command::RemoveListener { name }),
        pool().prop_map(Command::AddPool),
        pool().prop_map(Command::UpdatePool),
        name().prop_map(|name| Command::RemovePool { name }),
        (name(), backend()).prop_map(|(pool, backend)| Command::AddBackend { pool, backend }),
        (name(), address()).prop_map(|(pool, address)| Command::RemoveBackend { pool, address }),
        (name(), address(), number()).prop_map(|(pool, address, weight)| Command::SetWeight {
            pool,
            address,
            weight
        }),
        (name(), address(), admin_state()).prop_map(|(pool, address, state)| Command::SetAdminState {
            pool,
            address,
            state
        }),
        (ip(), option::of(node_id())).prop_map(|(address, owner)| Command::AssignVip { address, owner }),
        sticky_change().prop_map(Command::Sticky),
        any::<[u8; 32]>().prop_map(|b| Command::SetStickySecret(StickySecret(b))),
        (name(), pem(), pem()).prop_map(|(name, chain_pem, key_pem)| Command::PutCertificate {
            name,
            certificate: Certificate { chain_pem, key_pem }
        }),
        name().prop_map(|name| Command::RemoveCertificate { name }),
        (node_id(), name(), address(), any::<bool>()).prop_map(|(node, pool, address, up)| {
            Command::ReportHealth {
                node,
                pool,
                address,
                up,
            }
        }),
    ]
}

/// The example config's cluster (a bootstrap that applies), or a random one.
fn cluster() -> impl Strategy<Value = ClusterSpec> {
    let example = raftlb_config::parse("raftlb.toml", include_str!("../../../node/examples/raftlb.toml"))
        .map(|config| config.cluster)
        .unwrap_or_default();
    prop_oneof![
        Just(example),
        (vec(listener(), 0..3), vec(pool(), 0..3)).prop_map(|(listeners, pools)| ClusterSpec {
            listeners,
            pools,
            gslb: None,
        }),
    ]
}

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        40 => prop::sample::select(vec!["app", "dns", "web", "dns-tcp", "dns-udp", "extra", "site"])
            .prop_map(String::from),
        1 => Just(String::new()),
        1 => "[a-z]{65}",
        1 => "\\PC{0,10}",
        1 => Just("n".repeat(10_000)),
    ]
    .boxed()
}

/// Backends of the example's pools and a few free ones, or anything.
fn address() -> BoxedStrategy<SocketAddr> {
    prop_oneof![
        12 => prop::sample::select(vec![9001u16, 9002, 9003, 9004, 5301, 5302])
            .prop_map(|port| SocketAddr::from(([127, 0, 0, 1], port))),
        1 => any::<SocketAddr>(),
    ]
    .boxed()
}

fn ip() -> BoxedStrategy<IpAddr> {
    prop_oneof![
        3 => prop::sample::select(vec!["10.10.0.100", "2001:db8::100", "127.0.0.1", "0.0.0.0", "ff02::1"])
            .prop_map(|ip| ip.parse().unwrap_or(IpAddr::from([10, 10, 0, 100]))),
        1 => any::<IpAddr>(),
    ]
    .boxed()
}

/// A duration an operator would write, or zero, the limit, just above it,
/// or something absurd.
fn duration() -> BoxedStrategy<Duration> {
    prop_oneof![
        60 => (1u64..600_000).prop_map(Duration::from_millis),
        1 => Just(Duration::ZERO),
        1 => Just(MAX_DURATION),
        1 => Just(MAX_DURATION + Duration::from_nanos(1)),
        1 => Just(Duration::MAX),
        1 => any::<u64>().prop_map(Duration::from_secs),
    ]
    .boxed()
}

/// A small count, or an extreme one.
fn number() -> BoxedStrategy<u32> {
    prop_oneof![
        40 => 1u32..=10,
        1 => Just(0),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
    .boxed()
}

fn node_id() -> BoxedStrategy<u64> {
    prop_oneof![4 => 1u64..=5, 1 => Just(0), 1 => Just(u64::MAX), 1 => any::<u64>()].boxed()
}

fn admin_state() -> impl Strategy<Value = AdminState> {
    prop::sample::select(AdminState::ALL.map(|(_, s)| s).to_vec())
}

fn pem() -> BoxedStrategy<String> {
    prop_oneof![
        8 => Just("-----BEGIN CERTIFICATE-----".to_string()),
        1 => Just(String::new()),
        1 => Just("p".repeat(MAX_PEM_BYTES + 1)),
    ]
    .boxed()
}

/// A header or cookie name or a value: a token, or not.
fn word() -> BoxedStrategy<String> {
    prop_oneof![30 => "[A-Za-z][A-Za-z0-9-]{0,8}", 1 => Just(String::new()), 1 => "\\PC{0,6}"].boxed()
}

fn pairs() -> BoxedStrategy<Vec<(String, String)>> {
    prop_oneof![4 => Just(Vec::new()), 1 => vec((word(), word()), 1..3)].boxed()
}

fn listener() -> impl Strategy<Value = ListenerSpec> {
    let bind = prop_oneof![
        4 => prop::sample::select(vec![8080u16, 8081, 8082, 5353])
            .prop_map(|port| SocketAddr::from(([127, 0, 0, 1], port))),
        1 => Just(SocketAddr::from(([0, 0, 0, 0], 8080))),
        1 => any::<SocketAddr>(),
    ];
    let protocol = prop::sample::select(Protocol::ALL.map(|(_, p)| p).to_vec());
    let routes = prop_oneof![4 => Just(Vec::new()), 1 => vec(route(), 1..3)];
    (
        name(),
        protocol,
        bind,
        option::weighted(0.9, name()),
        routes,
        number(),
        duration(),
        http_limits(),
        client_limits(),
        acl(),
    )
        .prop_map(
            |(name, protocol, bind, pool, routes, max_connections, idle_timeout, http, limits, acl)| {
                ListenerSpec {
                    name,
                    protocol,
                    bind,
                    pool,
                    routes,
                    max_connections,
                    idle_timeout,
                    http,
                    limits,
                    acl,
                    // Format 3's fields stay at their defaults: the bare
                    // encodings tested here are format 1.
                    proxy_trusted: Vec::new(),
                    quic: Default::default(),
                }
            },
        )
}

/// Mostly the defaults; sometimes any values, in bounds or not.
fn client_limits() -> impl Strategy<Value = ClientLimits> {
    prop_oneof![
        20 => Just(ClientLimits::default()),
        1 => (any::<u32>(), any::<u32>(), any::<u32>(), any::<u8>(), any::<u8>()).prop_map(
            |(connections, rate, burst, prefix, prefix_v6)| ClientLimits {
                connections,
                connection_rate: rate,
                connection_burst: burst,
                request_rate: rate,
                request_burst: burst,
                source_prefix: prefix,
                source_prefix_v6: prefix_v6,
            }
        ),
    ]
}

/// Mostly none; sometimes rules in any order, duplicates included.
fn acl() -> impl Strategy<Value = Vec<AclRule>> {
    let rule = (any::<[u8; 4]>(), 0u8..=32, any::<bool>()).prop_map(|(octets, prefix, deny)| AclRule {
        network: Cidr::containing(std::net::IpAddr::from(octets), prefix),
        action: if deny { AclAction::Deny } else { AclAction::Allow },
    });
    prop_oneof![20 => Just(Vec::new()), 1 => vec(rule, 0..8)]
}

fn http_limits() -> impl Strategy<Value = HttpLimits> {
    let bytes = prop_oneof![
        20 => Just(16_384usize),
        1 => prop::sample::select(vec![0usize, 100, 8191, 8192, 1 << 20, (1 << 20) + 1, usize::MAX]),
    ];
    let headers =
        prop_oneof![20 => Just(100usize), 1 => prop::sample::select(vec![0usize, 1000, 1001, usize::MAX])];
    let body = prop_oneof![20 => Just(1u64 << 20), 1 => prop::sample::select(vec![0u64, 1 << 40, (1 << 40) + 1, u64::MAX])];
    let flags = prop_oneof![20 => Just((None, false)), 1 => (option::of(name()), any::<bool>())];
    let rate = prop_oneof![20 => Just(1024u32), 1 => prop::sample::select(vec![0u32, 1 << 30, (1 << 30) + 1, u32::MAX])];
    let streams =
        prop_oneof![20 => Just(32u32), 1 => prop::sample::select(vec![0u32, 1, 100, 101, u32::MAX])];
    (
        duration(),
        duration(),
        bytes,
        headers,
        body,
        (duration(), rate, duration(), streams),
        duration(),
        flags,
        any::<bool>(),
    )
        .prop_map(
            |(
                header_read,
                keepalive,
                max_header_bytes,
                max_headers,
                max_body_bytes,
                (body, body_min_rate, send_timeout, max_backend_streams),
                tunnel,
                flags,
                access_log,
            )| {
                HttpLimits {
                    header_read_timeout: header_read,
                    keepalive_timeout: keepalive,
                    max_header_bytes,
                    max_headers,
                    max_body_bytes,
                    body_timeout: body,
                    body_min_rate,
                    send_timeout,
                    max_backend_streams,
                    tunnel_idle_timeout: tunnel,
                    upgrades: vec!["websocket".to_string()],
                    default_certificate: flags.0,
                    redirect_https: flags.1,
                    access_log,
                    trusted_proxies: None,
                }
            },
        )
}

fn route() -> impl Strategy<Value = RouteSpec> {
    let host = prop_oneof![
        Just("api.example.com".to_string()),
        Just("*.example.com".to_string()),
        word()
    ];
    let path = prop_oneof![4 => Just("/api".to_string()), 1 => word()];
    let regex = prop_oneof![
        Just("^/v[0-9]+/".to_string()),
        Just("(".to_string()),
        Just("\\w{1000}{1000}".to_string()),
        Just("a".repeat(2000)),
    ];
    let matches = (
        option::of(host),
        option::of(path.clone()),
        option::of(path),
        option::weighted(0.3, regex),
        prop_oneof![3 => Just(Vec::new()), 1 => vec(word(), 1..3)],
        pairs(),
        pairs(),
    )
        .prop_map(
            |(host, path, path_prefix, path_regex, methods, headers, cookies)| RouteMatch {
                host,
                path,
                path_prefix,
                path_regex,
                methods,
                headers,
                cookies,
            },
        );
    let removed = prop_oneof![3 => Just(Vec::new()), 1 => vec(word(), 1..3)];
    (matches, name(), pairs(), removed).prop_map(|(matches, pool, set_headers, remove_headers)| RouteSpec {
        matches,
        pool,
        set_headers,
        remove_headers,
    })
}

fn backend() -> impl Strategy<Value = BackendSpec> {
    let weight = prop_oneof![30 => 1u32..=1000, 1 => Just(0), 1 => any::<u32>()];
    let max_connections = prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some)];
    (address(), weight, admin_state(), max_connections).prop_map(
        |(address, weight, state, max_connections)| BackendSpec {
            address,
            weight,
            state,
            max_connections,
            discovered: false,
        },
    )
}

fn pool() -> impl Strategy<Value = PoolSpec> {
    let algorithm = prop::sample::select(Algorithm::ALL.map(|(_, a)| a).to_vec());
    let hash_key = prop_oneof![
        12 => Just(HashKey::SourceIp),
        1 => Just(HashKey::Path),
        1 => word().prop_map(HashKey::Header),
        1 => word().prop_map(HashKey::Cookie),
    ];
    let backend_protocol = prop::sample::select(BackendProtocol::ALL.map(|(_, p)| p).to_vec());
    (
        name(),
        algorithm,
        hash_key,
        vec(backend(), 0..4),
        duration(),
        duration(),
        prop_oneof![30 => 1u32..=16, 1 => number()],
        option::weighted(0.3, sticky()),
        option::weighted(0.2, backend_tls()),
        backend_protocol,
        health(),
    )
        .prop_map(
            |(
                name,
                algorithm,
                hash_key,
                backends,
                connect,
                response,
                attempts,
                sticky,
                tls,
                backend_protocol,
                health,
            )| {
                PoolSpec {
                    name,
                    algorithm,
                    hash_key,
                    backends,
                    connect_timeout: connect,
                    response_timeout: response,
                    max_connect_attempts: attempts,
                    sticky,
                    tls,
                    backend_protocol,
                    health,
                    limits: Default::default(),
                    proxy_protocol: None,
                    discovery: None,
                    discovery_status: Default::default(),
                }
            },
        )
}

fn sticky() -> impl Strategy<Value = StickyPolicy> {
    let kind = prop::sample::select(StickyKind::ALL.map(|(_, k)| k).to_vec());
    let cookie = (
        prop_oneof![4 => Just("/".to_string()), 1 => word()],
        any::<bool>(),
        any::<bool>(),
        option::of(prop::sample::select(SameSite::ALL.map(|(_, s)| s).to_vec())),
        any::<bool>(),
    )
        .prop_map(|(path, secure, http_only, same_site, max_age)| CookieAttributes {
            path,
            secure,
            http_only,
            same_site,
            max_age,
        });
    let prefix = prop_oneof![4 => Just(32u8), 1 => any::<u8>()];
    let contract = prop::sample::select(StickyContract::ALL.map(|(_, c)| c).to_vec());
    // Small tables, so eviction happens; and zero or absurd bounds.
    let bounds = (number().prop_map(u64::from), number(), number());
    (
        kind,
        word(),
        duration(),
        contract,
        prefix.clone(),
        prefix,
        cookie,
        bounds,
    )
        .prop_map(
            |(kind, name, ttl, contract, v4, v6, cookie, (max_entries, learn_rate, learn_burst))| {
                let name = if kind == StickyKind::SourceIp && name.len() % 2 == 0 {
                    String::new()
                } else {
                    name
                };
                StickyPolicy {
                    kind,
                    name,
                    ttl,
                    contract,
                    source_prefix_v4: v4,
                    source_prefix_v6: v6,
                    cookie,
                    max_entries,
                    learn_rate,
                    learn_burst,
                }
            },
        )
}

fn backend_tls() -> impl Strategy<Value = BackendTls> {
    (
        option::of(word()),
        option::of(Just("/etc/ca.pem".to_string())),
        any::<bool>(),
    )
        .prop_map(|(server_name, ca_file, insecure)| BackendTls {
            server_name,
            ca_file,
            insecure,
        })
}

fn health() -> impl Strategy<Value = PoolHealth> {
    let probe = prop_oneof![
        Just(Probe::Tcp),
        (
            word(),
            prop_oneof![Just("/healthz".to_string()), word()],
            option::of(word()),
            any::<(u16, u16)>()
        )
            .prop_map(|(method, path, host, expect_status)| Probe::Http(HttpProbe {
                method,
                path,
                host,
                expect_status,
                expect_body: None,
            })),
    ];
    let check = (probe, duration(), duration(), number(), number()).prop_map(
        |(probe, interval, timeout, rise, fall)| HealthCheck {
            probe,
            interval,
            timeout,
            rise,
            fall,
        },
    );
    let outlier = (number(), duration(), duration(), number()).prop_map(|(failures, base, max, percent)| {
        OutlierDetection {
            consecutive_failures: failures,
            base_ejection_time: base,
            max_ejection_time: max,
            max_ejection_percent: percent,
        }
    });
    let retry =
        (0u32..=5, number(), number()).prop_map(|(attempts, budget_percent, min_per_second)| RetryPolicy {
            attempts,
            budget_percent,
            min_per_second,
        });
    let slow_start = prop_oneof![3 => Just(Duration::ZERO), 1 => duration()];
    (
        option::weighted(0.3, check),
        option::weighted(0.3, outlier),
        prop_oneof![4 => Just(50u32), 1 => number()],
        slow_start,
        retry,
    )
        .prop_map(
            |(check, outlier, panic_threshold, slow_start, retry)| PoolHealth {
                check,
                outlier,
                panic_threshold,
                slow_start,
                retry,
            },
        )
}

fn sticky_change() -> impl Strategy<Value = StickyChange> {
    let at = prop_oneof![3 => 0u64..10_000_000, 1 => Just(u64::MAX), 1 => any::<u64>()];
    prop_oneof![
        (
            name(),
            any::<[u8; 16]>(),
            address(),
            option::of(address()),
            at.clone()
        )
            .prop_map(|(pool, key, backend, replaces, at_ms)| StickyChange::Stick {
                pool,
                key: StickyKey(key),
                backend,
                replaces,
                at_ms,
            }),
        at.prop_map(|now_ms| StickyChange::Expire { now_ms }),
        name().prop_map(|pool| StickyChange::Flush { pool }),
    ]
}
