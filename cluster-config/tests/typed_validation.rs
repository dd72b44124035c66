//! The typed validation: every check the file applies has a twin for
//! values that come through the admin API, `apply` refuses what it refuses
//! (changing nothing), and its errors name the thing and say why.

use raftlb_config::limits::{
    MAX_BACKENDS_PER_POOL, MAX_DURATION, MAX_ENTRY_REGEXES, MAX_LISTENERS, MAX_PEM_BYTES,
};
use raftlb_config::route::RouteSpec;
use raftlb_config::{
    BackendSpec, Certificate, ClusterSpec, ClusterState, Command, HashKey, HealthCheck, HttpProbe,
    ListenerSpec, Outcome, OutlierDetection, PoolSpec, Probe, StickyChange, StickyKey, StickyKind,
    StickyPolicy, StickyTables, validate,
};
use std::net::SocketAddr;
use std::time::Duration;

/// A change made to a valid value to make it invalid.
type Change<T> = fn(&mut T);

const EXAMPLE: &str = include_str!("../../node/examples/raftlb.toml");

fn example() -> ClusterSpec {
    raftlb_config::parse("raftlb.toml", EXAMPLE)
        .expect("the example is valid")
        .cluster
}

fn state() -> ClusterState {
    let mut state = ClusterState::default();
    assert_eq!(state.apply(Command::Bootstrap(example())), Outcome::Applied);
    state
}

fn web() -> ListenerSpec {
    example().listeners[0].clone()
}

fn app() -> PoolSpec {
    example().pool("app").expect("pool app").clone()
}

/// `command` is refused with `reason`, by validation and by `apply`.
fn refused(command: Command, reason: &str) {
    let invalid = command.validate().expect_err(reason);
    assert!(
        invalid.0.contains(reason),
        "expected {reason:?} in {:?}",
        invalid.0
    );
    let mut state = state();
    let before = state.clone();
    assert_eq!(state.apply(command), Outcome::Rejected(invalid.0));
    assert_eq!(state, before);
}

#[test]
fn the_issue_examples() {
    let mut listener = web();
    listener.http.max_header_bytes = 100;
    let command = Command::UpdateListener(listener.clone());
    assert_eq!(
        command.validate().unwrap_err().to_string(),
        "listener \"web\": max_header_bytes 100 is below 8192"
    );
    refused(command, "max_header_bytes 100 is below 8192");
    refused(Command::AddListener(listener.clone()), "below 8192");
    let mut seed = example();
    seed.listeners[0] = listener;
    let mut empty = ClusterState::default();
    assert!(
        matches!(empty.apply(Command::Bootstrap(seed)), Outcome::Rejected(r) if r.contains("below 8192"))
    );

    let mut pool = app();
    pool.response_timeout = Duration::from_secs(u64::MAX);
    refused(
        Command::UpdatePool(pool),
        "pool \"app\": response_timeout 18446744073709551615s is longer than the longest allowed, 8760h",
    );
}

#[test]
fn listener_checks() {
    let cases: Vec<(Change<ListenerSpec>, &str)> = vec![
        (
            |l| l.name = "web server".into(),
            "listener: invalid name \"web server\"",
        ),
        (|l| l.name = "x".repeat(65), "listener: invalid name"),
        (
            |l| l.http.max_header_bytes = (1 << 20) + 1,
            "max_header_bytes 1048577 is above 1048576",
        ),
        (|l| l.http.max_headers = 0, "max_headers 0 is below 1"),
        (|l| l.http.max_body_bytes = 0, "max_body_bytes 0 is below 1"),
        (
            |l| l.max_connections = 1_000_001,
            "max_connections 1000001 is above 1000000",
        ),
        (
            |l| l.idle_timeout = Duration::ZERO,
            "idle_timeout must be greater than zero",
        ),
        (|l| l.http.keepalive_timeout = Duration::MAX, "keepalive_timeout"),
        (
            |l| l.http.body_timeout = MAX_DURATION + Duration::from_millis(1),
            "body_timeout",
        ),
        (
            |l| l.http.default_certificate = Some("site".into()),
            "only applies to https listeners",
        ),
        (|l| l.pool = None, "has neither a pool nor routes"),
        (
            |l| l.routes = vec![route(|r| r.matches.host = Some("a b".into()))],
            "invalid host \"a b\"",
        ),
        (
            |l| l.routes = vec![route(|r| r.matches.path = Some("api".into()))],
            "must start with '/'",
        ),
        (
            |l| l.routes = vec![route(|r| r.matches.path_regex = Some("(".into()))],
            "invalid regular expression",
        ),
        (
            |l| l.routes = vec![route(|r| r.matches.path_regex = Some("\\w{1000}{1000}".into()))],
            "invalid regular expression",
        ),
        (
            |l| l.routes = vec![route(|r| r.matches.methods = vec!["G3T".into()])],
            "invalid method",
        ),
        (
            |l| l.routes = vec![route(|r| r.set_headers = vec![("X Y".into(), "v".into())])],
            "invalid header name \"X Y\"",
        ),
        (
            |l| l.routes = vec![route(|r| r.matches.cookies = vec![("c".into(), "\n".into())])],
            "the cookie value must be printable ASCII",
        ),
        (
            |l| l.routes = vec![route(|_| {}); 1025],
            "1025 routes are more than the 1024",
        ),
    ];
    for (change, reason) in cases {
        let mut listener = web();
        change(&mut listener);
        assert!(validate::listener(&listener).is_err(), "{reason}");
        refused(Command::UpdateListener(listener), reason);
    }
    let mut tcp = example().listeners[1].clone();
    tcp.http.redirect_https = true;
    refused(
        Command::UpdateListener(tcp),
        "redirect_https only applies to http listeners",
    );
}

fn route(change: fn(&mut RouteSpec)) -> RouteSpec {
    let mut route = RouteSpec {
        pool: "app".into(),
        ..RouteSpec::default()
    };
    change(&mut route);
    route
}

#[test]
fn pool_checks() {
    let cases: Vec<(Change<PoolSpec>, &str)> = vec![
        (|p| p.backends.clear(), "pool \"app\" has no backend"),
        (
            |p| p.backends[1].address = p.backends[0].address,
            "is twice in pool \"app\"",
        ),
        (|p| p.backends[0].weight = 0, "weight 0 is below 1"),
        (|p| p.backends[0].weight = 1001, "weight 1001 is above 1000"),
        (
            |p| p.max_connect_attempts = 17,
            "max_connect_attempts 17 is above 16",
        ),
        (
            |p| p.max_connect_attempts = 0,
            "max_connect_attempts 0 is below 1",
        ),
        (
            |p| p.connect_timeout = Duration::ZERO,
            "connect_timeout must be greater than zero",
        ),
        (
            |p| p.hash_key = HashKey::Path,
            "hash_key \"path\" only applies to algorithm = \"maglev\"",
        ),
        (
            |p| p.health.panic_threshold = 101,
            "panic_threshold 101 is above 100",
        ),
        (|p| p.health.slow_start = Duration::MAX, "slow_start"),
        (|p| p.health.retry.attempts = 6, "retry: attempts 6 is above 5"),
        (
            |p| p.health.retry.budget_percent = 101,
            "retry: budget_percent 101",
        ),
        (
            |p| p.health.retry.min_per_second = 10_001,
            "retry: min_per_second 10001",
        ),
        (
            |p| p.health.check = Some(check(|c| c.rise = 0)),
            "health_check: rise 0 is below 1",
        ),
        (
            |p| p.health.check = Some(check(|c| c.fall = 101)),
            "health_check: fall 101 is above 100",
        ),
        (
            |p| p.health.check = Some(check(|c| c.timeout = c.interval * 2)),
            "timeout cannot exceed the interval",
        ),
        (
            |p| p.health.check = Some(check(|c| c.interval = Duration::MAX)),
            "interval",
        ),
        (
            |p| p.health.check = Some(http_check(|h| h.path = "healthz".into())),
            "a path starts with /",
        ),
        (
            |p| p.health.check = Some(http_check(|h| h.method = "GE T".into())),
            "method must be non-empty",
        ),
        (
            |p| p.health.check = Some(http_check(|h| h.expect_status = (600, 700))),
            "expect_status 600-700",
        ),
        (
            |p| p.health.check = Some(http_check(|h| h.expect_status = (300, 200))),
            "expect_status 300-200",
        ),
        (
            |p| p.health.outlier = Some(outlier(|o| o.consecutive_failures = 0)),
            "consecutive_failures 0",
        ),
        (
            |p| p.health.outlier = Some(outlier(|o| o.max_ejection_percent = 101)),
            "max_ejection_percent 101",
        ),
        (
            |p| p.health.outlier = Some(outlier(|o| o.max_ejection_time = Duration::from_secs(1))),
            "max_ejection_time cannot be shorter",
        ),
        (
            |p| p.sticky = Some(sticky(StickyKind::SourceIp, "sid")),
            "kind \"source_ip\" takes no name",
        ),
        (
            |p| p.sticky = Some(sticky(StickyKind::Header, "")),
            "kind \"header\" needs a name",
        ),
        (
            |p| p.sticky = Some(sticky(StickyKind::Cookie, "a;b")),
            "invalid cookie or header name",
        ),
        (
            |p| {
                p.sticky = Some(StickyPolicy {
                    ttl: Duration::from_millis(10),
                    ..sticky(StickyKind::Cookie, "s")
                })
            },
            "a sticky ttl must be at least 1s",
        ),
        (
            |p| {
                p.sticky = Some(StickyPolicy {
                    ttl: Duration::MAX,
                    ..sticky(StickyKind::Cookie, "s")
                })
            },
            "sticky: ttl",
        ),
        (
            |p| {
                p.sticky = Some(StickyPolicy {
                    source_prefix_v4: 33,
                    ..sticky(StickyKind::SourceIp, "")
                })
            },
            "source_prefix 33 is above 32",
        ),
        (
            |p| {
                p.sticky = Some(StickyPolicy {
                    source_prefix_v6: 129,
                    ..sticky(StickyKind::SourceIp, "")
                })
            },
            "source_prefix_v6 129 is above 128",
        ),
        (
            |p| {
                p.sticky = Some(StickyPolicy {
                    max_entries: 0,
                    ..sticky(StickyKind::Header, "X-S")
                })
            },
            "sticky: max_entries 0 is below 1",
        ),
        (
            |p| {
                p.sticky = Some(StickyPolicy {
                    max_entries: u64::MAX,
                    ..sticky(StickyKind::Header, "X-S")
                })
            },
            "max_entries 18446744073709551615 is above 67108864",
        ),
        (
            |p| {
                p.sticky = Some(StickyPolicy {
                    learn_rate: 0,
                    ..sticky(StickyKind::SourceIp, "")
                })
            },
            "sticky: learn_rate 0 is below 1",
        ),
        (
            |p| {
                p.sticky = Some(StickyPolicy {
                    learn_burst: 1_000_001,
                    ..sticky(StickyKind::LearnCookie, "sid")
                })
            },
            "sticky: learn_burst 1000001 is above 1000000",
        ),
        (
            |p| p.tls = Some(Default::default()),
            "tls: say how to check the backends' certificates",
        ),
    ];
    for (change, reason) in cases {
        let mut pool = app();
        change(&mut pool);
        assert!(validate::pool(&pool).is_err(), "{reason}");
        refused(Command::UpdatePool(pool), reason);
    }
    let mut cookie_path = sticky(StickyKind::Cookie, "s");
    cookie_path.cookie.path = "/; Domain=evil".into();
    refused(
        Command::UpdatePool(PoolSpec {
            sticky: Some(cookie_path),
            ..app()
        }),
        "invalid cookie path",
    );
}

fn check(change: fn(&mut HealthCheck)) -> HealthCheck {
    let mut check = HealthCheck {
        probe: Probe::Tcp,
        interval: HealthCheck::DEFAULT_INTERVAL,
        timeout: HealthCheck::DEFAULT_TIMEOUT,
        rise: HealthCheck::DEFAULT_RISE,
        fall: HealthCheck::DEFAULT_FALL,
    };
    change(&mut check);
    check
}

fn http_check(change: fn(&mut HttpProbe)) -> HealthCheck {
    let mut probe = HttpProbe {
        method: "GET".into(),
        path: "/".into(),
        host: None,
        expect_status: (200, 399),
        expect_body: None,
    };
    change(&mut probe);
    HealthCheck {
        probe: Probe::Http(probe),
        ..check(|_| {})
    }
}

fn outlier(change: fn(&mut OutlierDetection)) -> OutlierDetection {
    let mut outlier = OutlierDetection::default();
    change(&mut outlier);
    outlier
}

fn sticky(kind: StickyKind, name: &str) -> StickyPolicy {
    StickyPolicy::new(kind, name)
}

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

#[test]
fn other_commands() {
    refused(
        Command::SetWeight {
            pool: "app".into(),
            address: addr(9001),
            weight: u32::MAX,
        },
        "pool \"app\": backend 127.0.0.1:9001: weight 4294967295 is above 1000",
    );
    refused(
        Command::AddBackend {
            pool: "app".into(),
            backend: BackendSpec {
                weight: 0,
                ..BackendSpec::new(addr(9009))
            },
        },
        "weight 0 is below 1",
    );
    refused(
        Command::AssignVip {
            address: "10.10.0.100".parse().unwrap(),
            owner: Some(0),
        },
        "node id 0 is below 1",
    );
    refused(
        Command::AssignVip {
            address: "127.0.0.1".parse().unwrap(),
            owner: Some(1),
        },
        "a VIP is a unicast address",
    );
    refused(
        Command::ReportHealth {
            node: u64::MAX,
            pool: "app".into(),
            address: addr(9001),
            up: true,
        },
        "node id 18446744073709551615 is above",
    );
    let certificate = |chain_pem: String| Certificate {
        chain_pem,
        key_pem: "key".into(),
    };
    refused(
        Command::PutCertificate {
            name: "a/b".into(),
            certificate: certificate("pem".into()),
        },
        "certificate: invalid name \"a/b\"",
    );
    refused(
        Command::PutCertificate {
            name: "site".into(),
            certificate: certificate("p".repeat(MAX_PEM_BYTES + 1)),
        },
        "certificate \"site\": the chain PEM is 1048577 bytes",
    );
    refused(
        Command::Batch(vec![Command::SetStickySecret(raftlb_config::StickySecret(
            [0; 32],
        ))]),
        "the sticky-cookie secret cannot be part of an atomic batch",
    );
    refused(
        Command::Batch(vec![Command::Batch(vec![Command::Batch(Vec::new())])]),
        "batches nest at most 2 deep",
    );
}

#[test]
fn route_regexes_per_entry_are_bounded() {
    let mut listener = web();
    listener.routes = vec![route(|r| r.matches.path_regex = Some("^/v[0-9]+/".into()))];
    let updates = |n| vec![Command::UpdateListener(listener.clone()); n];
    assert!(
        Command::Independent(updates(MAX_ENTRY_REGEXES))
            .validate()
            .is_ok()
    );
    let mut state = state();
    let before = state.clone();
    assert_eq!(
        state.apply(Command::Independent(updates(MAX_ENTRY_REGEXES + 1))),
        Outcome::Rejected("one entry carries at most 4096 route regexes".into())
    );
    assert_eq!(state, before);
}

#[test]
fn counts_are_bounded() {
    let mut seed = example();
    let template = seed.listeners[0].clone();
    seed.listeners = (0..=MAX_LISTENERS)
        .map(|i| ListenerSpec {
            name: format!("l{i}"),
            bind: ([127, 0, 0, 1], 10_000 + i as u16).into(),
            ..template.clone()
        })
        .collect();
    let mut empty = ClusterState::default();
    assert_eq!(
        empty.apply(Command::Bootstrap(seed)),
        Outcome::Rejected("1025 listeners are more than the 1024 a cluster may have".into())
    );
    let mut big = app();
    big.backends = (0..=MAX_BACKENDS_PER_POOL as u32)
        .map(|i| BackendSpec::new(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80).into()))
        .collect();
    refused(
        Command::UpdatePool(big.clone()),
        "131073 backends are more than the 131072",
    );
    big.backends.pop();
    let mut state = state();
    assert_eq!(state.apply(Command::UpdatePool(big)), Outcome::Applied);
    let add = Command::AddBackend {
        pool: "app".into(),
        backend: BackendSpec::new(addr(1)),
    };
    assert_eq!(
        state.apply(add),
        Outcome::Rejected("pool \"app\" has 131072 backends, the most a pool may".into())
    );
}

#[test]
fn sticky_changes_with_extreme_times_neither_panic_nor_overflow() {
    let mut pool = app();
    pool.sticky = Some(StickyPolicy {
        ttl: MAX_DURATION,
        ..sticky(StickyKind::Header, "X-Session")
    });
    let mut state = state();
    let tables = StickyTables::default();
    assert_eq!(state.apply(Command::UpdatePool(pool)), Outcome::Applied);
    for at_ms in [0, 1, u64::MAX - 1, u64::MAX] {
        let stick = StickyChange::Stick {
            pool: "app".into(),
            key: StickyKey::of(&at_ms.to_be_bytes()),
            backend: addr(9001),
            replaces: None,
            at_ms,
        };
        assert_eq!(
            state.apply_with(Command::Sticky(stick), &tables),
            Outcome::Applied
        );
    }
    for now_ms in [0, u64::MAX - 1] {
        let expire = Command::Sticky(StickyChange::Expire { now_ms });
        assert_eq!(state.apply_with(expire, &tables), Outcome::Applied);
    }
    let entries: usize = tables.stats().iter().map(|t| t.entries).sum();
    assert_eq!(
        entries, 2,
        "only the sessions stuck at the end of time outlive it"
    );
}

#[test]
fn the_file_and_the_api_refuse_alike() {
    // A file key and value, and the same change made to the typed value.
    let cases: Vec<(&str, &str, Change<ClusterSpec>)> = vec![
        ("[[listener]]", "max_header_bytes = 100", |s| {
            s.listeners[0].http.max_header_bytes = 100
        }),
        ("[[listener]]", "max_headers = 1001", |s| {
            s.listeners[0].http.max_headers = 1001
        }),
        ("[[listener]]", "keepalive_timeout = \"9000h\"", |s| {
            s.listeners[0].http.keepalive_timeout = Duration::from_secs(9000 * 3600)
        }),
        ("[[listener]]", "default_certificate = \"x\"", |s| {
            s.listeners[0].http.default_certificate = Some("x".into())
        }),
        ("connect_timeout = \"3s\"", "connect_timeout = \"0s\"", |s| {
            s.pools[0].connect_timeout = Duration::ZERO
        }),
        (
            "response_timeout = \"60s\"",
            "response_timeout = \"8761h\"",
            |s| s.pools[0].response_timeout = Duration::from_secs(8761 * 3600),
        ),
        ("max_connect_attempts = 3", "max_connect_attempts = 17", |s| {
            s.pools[0].max_connect_attempts = 17
        }),
    ];
    for (anchor, line, change) in cases {
        let text = EXAMPLE.replacen(anchor, &format!("{anchor}\n{line}"), 1);
        assert!(text != EXAMPLE, "{anchor}");
        assert!(
            raftlb_config::parse("raftlb.toml", &text).is_err(),
            "the file accepts {line}"
        );
        let mut seed = example();
        change(&mut seed);
        assert!(validate::cluster(&seed).is_err(), "the API accepts {line}");
    }
}
