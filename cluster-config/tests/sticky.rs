//! Sticky sessions: the `[pool.sticky]` schema, and the replicated tables'
//! rules (first session wins, refresh, re-stick, deterministic expiry,
//! snapshots) applied through `ClusterState::apply_with`.

use raftlb_config::{
    Algorithm, BackendSpec, ClusterSpec, ClusterState, Command, HttpLimits, ListenerSpec, Outcome, PoolSpec,
    Protocol, StickyChange, StickyContract, StickyKey, StickyKind, StickyPolicy, StickyTables, parse,
};
use std::net::SocketAddr;
use std::time::Duration;

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

const BASE: &str = r#"
[node]
id = 1
data_dir = "./data"

[[listener]]
name = "web"
protocol = "PROTO"
bind = "127.0.0.1:8080"
pool = "app"

[[pool]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]

[pool.sticky]
"#;

fn config(protocol: &str, sticky: &str) -> Result<raftlb_config::Config, Vec<String>> {
    let text = BASE.replace("PROTO", protocol) + sticky;
    parse("lb.toml", &text).map_err(|e| e.iter().map(ToString::to_string).collect())
}

#[test]
fn file_policies_and_defaults() {
    let http = config(
        "http",
        "kind = \"cookie\"\nsecure = true\nsame_site = \"strict\"\n",
    )
    .unwrap();
    let policy = http.cluster.pools[0].sticky.clone().unwrap();
    assert_eq!(policy.kind, StickyKind::Cookie);
    assert_eq!(policy.name, "RLBSESS");
    assert_eq!(policy.ttl, Duration::from_secs(1800));
    assert_eq!(policy.contract, StickyContract::Async);
    assert!(policy.cookie.secure && policy.cookie.http_only);

    let tcp = config(
        "tcp",
        "kind = \"source_ip\"\nsource_prefix = 24\nttl = \"5m\"\ncontract = \"sync\"\n",
    )
    .unwrap();
    let policy = tcp.cluster.pools[0].sticky.clone().unwrap();
    assert_eq!((policy.source_prefix_v4, policy.source_prefix_v6), (24, 128));
    assert_eq!(policy.ttl, Duration::from_secs(300));
    assert_eq!(policy.contract, StickyContract::Sync);
}

#[test]
fn file_errors_name_key_and_reason() {
    let cases = [
        (
            "http",
            "kind = \"learn_cookie\"\n",
            "pool[0].sticky.kind: kind \"learn_cookie\" needs a name",
        ),
        (
            "http",
            "kind = \"source_ip\"\nname = \"x\"\n",
            "pool[0].sticky.name: kind \"source_ip\" takes no name",
        ),
        (
            "http",
            "kind = \"header\"\nname = \"X Bad\"\n",
            "invalid cookie or header name",
        ),
        (
            "http",
            "kind = \"cookie\"\nttl = \"10ms\"\n",
            "a sticky ttl must be at least 1s",
        ),
        (
            "http",
            "kind = \"header\"\nname = \"X-S\"\nsecure = true\n",
            "only applies to kind = \"cookie\"",
        ),
        ("http", "kind = \"sometimes\"\n", "pool[0].sticky.kind"),
        (
            "tcp",
            "kind = \"cookie\"\n",
            "which a tcp listener cannot see; use kind = \"source_ip\"",
        ),
    ];
    for (protocol, sticky, expected) in cases {
        let errors = config(protocol, sticky).expect_err(sticky);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(expected) && e.starts_with("lb.toml:")),
            "{sticky:?}: expected {expected:?} in {errors:?}"
        );
    }
}

fn sticky_pool(kind: StickyKind, ttl: Duration, ports: &[u16]) -> PoolSpec {
    // A source_ip policy has no name (the file refuses one, and so does apply).
    let name = if kind == StickyKind::SourceIp {
        ""
    } else {
        "JSESSIONID"
    };
    let mut policy = StickyPolicy::new(kind, name);
    policy.ttl = ttl;
    PoolSpec {
        name: "app".to_string(),
        algorithm: Algorithm::RoundRobin,
        hash_key: Default::default(),
        backends: ports.iter().map(|p| BackendSpec::new(addr(*p))).collect(),
        connect_timeout: Duration::from_secs(3),
        response_timeout: Duration::from_secs(60),
        max_connect_attempts: 3,
        sticky: Some(policy),
        tls: None,
        backend_protocol: Default::default(),
        health: Default::default(),
        limits: Default::default(),
        proxy_protocol: None,
        discovery: None,
        discovery_status: Default::default(),
    }
}

fn seeded(pool: PoolSpec) -> ClusterState {
    let mut state = ClusterState::default();
    let listener = ListenerSpec {
        name: "web".to_string(),
        protocol: Protocol::Http,
        bind: addr(8080),
        pool: Some("app".to_string()),
        routes: Vec::new(),
        max_connections: 100,
        idle_timeout: Duration::from_secs(30),
        http: HttpLimits::default(),
        limits: Default::default(),
        acl: Vec::new(),
        proxy_trusted: Vec::new(),
        quic: Default::default(),
    };
    let seed = ClusterSpec {
        listeners: vec![listener],
        pools: vec![pool],
        gslb: None,
    };
    assert_eq!(state.apply(Command::Bootstrap(seed)), Outcome::Applied);
    state
}

fn stick(key: &str, port: u16, replaces: Option<u16>, at_ms: u64) -> Command {
    Command::Sticky(StickyChange::Stick {
        pool: "app".to_string(),
        key: StickyKey::of(key.as_bytes()),
        backend: addr(port),
        replaces: replaces.map(addr),
        at_ms,
    })
}

fn backend_of(tables: &StickyTables, key: &str) -> Option<u16> {
    tables
        .lookup("app", &StickyKey::of(key.as_bytes()))
        .map(|s| s.backend.port())
}

#[test]
fn first_session_wins_and_resticks_need_the_old_backend() {
    let mut state = seeded(sticky_pool(
        StickyKind::LearnCookie,
        Duration::from_secs(60),
        &[9001, 9002],
    ));
    let tables = StickyTables::default();
    assert_eq!(
        state.apply_with(stick("a", 9001, None, 1_000), &tables),
        Outcome::Applied
    );
    // Another node, not yet aware, stuck the same session elsewhere: refused.
    let raced = state.apply_with(stick("a", 9002, None, 1_001), &tables);
    assert!(
        raced.rejection().contains("already stuck to 127.0.0.1:9001"),
        "{raced:?}"
    );
    // A refresh keeps the backend and never moves time backwards.
    assert!(
        state
            .apply_with(stick("a", 9001, Some(9001), 5_000), &tables)
            .is_applied()
    );
    assert!(
        state
            .apply_with(stick("a", 9001, Some(9001), 4_000), &tables)
            .is_applied()
    );
    assert_eq!(tables.lookup("app", &StickyKey::of(b"a")).unwrap().at_ms, 5_000);
    // A re-stick names the backend it replaces.
    assert!(
        state
            .apply_with(stick("a", 9002, Some(9001), 6_000), &tables)
            .is_applied()
    );
    assert_eq!(backend_of(&tables, "a"), Some(9002));
    // Unknown backends and pools are refused; plain `apply` cannot touch tables.
    assert!(!state.apply_with(stick("b", 9999, None, 1), &tables).is_applied());
    assert!(!state.apply(stick("b", 9001, None, 1)).is_applied());
    assert_eq!(backend_of(&tables, "b"), None);
}

#[test]
fn expiry_is_a_function_of_the_log() {
    let pool = sticky_pool(StickyKind::Header, Duration::from_secs(10), &[9001, 9002]);
    let mut state = seeded(pool.clone());
    let (one, two) = (StickyTables::default(), StickyTables::default());
    let log: Vec<Command> = (0..200u64)
        .map(|i| stick(&format!("s{i}"), 9001 + (i % 2) as u16, None, i * 100))
        .chain([Command::Sticky(StickyChange::Expire { now_ms: 15_000 })])
        .collect();
    for command in &log {
        state.apply_with(command.clone(), &one);
    }
    let mut other = seeded(pool);
    for command in log {
        other.apply_with(command, &two);
    }
    // Sessions last used at or before 15 s − 10 s are gone, the rest stay.
    let stats = one.stats();
    assert_eq!(stats[0].entries, 149);
    assert_eq!(backend_of(&one, "s50"), None);
    assert_eq!(backend_of(&one, "s51"), Some(9002));
    assert_eq!(one.stats(), two.stats(), "same log, same table and hash");

    // A different history gives a different hash.
    other.apply_with(stick("s199", 9002, Some(9002), 99_999), &two);
    assert_ne!(one.stats()[0].hash, two.stats()[0].hash);

    // Removing a backend drops its sessions at the next expiry pass.
    let remove = Command::RemoveBackend {
        pool: "app".to_string(),
        address: addr(9002),
    };
    assert!(state.apply_with(remove, &one).is_applied());
    state.apply_with(Command::Sticky(StickyChange::Expire { now_ms: 15_000 }), &one);
    assert_eq!(one.stats()[0].entries, 74);
    assert_eq!(backend_of(&one, "s51"), None);
    assert_eq!(backend_of(&one, "s52"), Some(9001));

    // Flush forgets the pool's sessions.
    let flush = Command::Sticky(StickyChange::Flush {
        pool: "app".to_string(),
    });
    assert!(state.apply_with(flush, &one).is_applied());
    assert!(one.stats().is_empty());
}

#[test]
fn snapshots_restore_the_same_table() {
    let mut state = seeded(sticky_pool(
        StickyKind::SourceIp,
        Duration::from_secs(60),
        &[9001, 9002, 9003],
    ));
    let tables = StickyTables::default();
    for i in 0..10_000u64 {
        state.apply_with(stick(&i.to_string(), 9001 + (i % 3) as u16, None, i), &tables);
    }
    let bytes = tables.snapshot_into(Vec::new()).unwrap();
    let restored = StickyTables::default();
    restored.restore(&bytes).unwrap();
    assert_eq!(restored.stats(), tables.stats());
    assert_eq!(restored.stats()[0].entries, 10_000);
    assert_eq!(backend_of(&restored, "42"), Some(9001));
    assert!(
        restored.restore(&bytes[..bytes.len() / 2]).is_err(),
        "a cut snapshot is refused"
    );
}

#[test]
fn the_cookie_secret_is_set_once() {
    let mut state = seeded(sticky_pool(StickyKind::Cookie, Duration::from_secs(60), &[9001]));
    let set = |b| Command::SetStickySecret(raftlb_config::StickySecret([b; 32]));
    assert!(state.apply(set(1)).is_applied());
    assert!(!state.apply(set(2)).is_applied());
    assert_eq!(state.sticky_secret().unwrap().0, [1; 32]);
    assert_eq!(format!("{:?}", state.sticky_secret()), "Some(StickySecret(..))");
    // A cookie pool keeps no table.
    let tables = StickyTables::default();
    assert!(!state.apply_with(stick("a", 9001, None, 1), &tables).is_applied());
}
