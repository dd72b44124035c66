//! DNS discovery in the replicated model: the pool's `discovery` keys (and
//! each refusal naming the file, the key and why), answers turned into
//! backend sets, the leader's decisions (failures keep the set, NXDOMAIN
//! empties it only after its hold), and `SetDiscovered` applied beside
//! static backends, files and `ctl` commands.

use raftlb_config::discovery::{
    Answer, Discovered, DiscoveryFailure, DiscoverySpec, DiscoveryUpdate, MAX_DISCOVERED, Record, RecordType,
    backends_of, decide,
};
use raftlb_config::{BackendSpec, ClusterState, Command, PoolSpec, diff::diff, parse};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn file(discovery: &str, backends: &str) -> String {
    format!(
        "[node]\nid = 1\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:8080\"\n\
         pool = \"app\"\n\n[[pool]]\nname = \"app\"\n{backends}discovery = {discovery}\n"
    )
}

fn errors(text: &str) -> String {
    match parse("lb.toml", text) {
        Ok(_) => panic!("expected errors in\n{text}"),
        Err(errors) => errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn state(discovery: &str, backends: &str) -> ClusterState {
    let config = parse("lb.toml", &file(discovery, backends)).expect("valid");
    let mut state = ClusterState::default();
    assert!(state.apply(Command::SetClusterVersion(6)).is_applied());
    assert!(state.apply(Command::Bootstrap(config.cluster)).is_applied());
    state
}

fn a(last: u8) -> Record {
    Record {
        address: IpAddr::from([10, 0, 0, last]),
        port: 0,
        priority: 0,
        weight: 0,
    }
}

fn srv(last: u8, port: u16, priority: u16, weight: u16) -> Record {
    Record {
        port,
        priority,
        weight,
        ..a(last)
    }
}

fn at(last: u8, port: u16, weight: u32) -> Discovered {
    Discovered {
        address: SocketAddr::from(([10, 0, 0, last], port)),
        weight,
    }
}

fn update(backends: Option<Vec<Discovered>>) -> Command {
    Command::SetDiscovered(DiscoveryUpdate {
        pool: "app".into(),
        backends,
        last_good_ms: 1_000,
        failure: None,
    })
}

fn pool(state: &ClusterState) -> &PoolSpec {
    state.spec().pool("app").expect("pool app")
}

#[test]
fn the_keys_parse_with_their_defaults() {
    let text = file("{ name = \"app.service.consul\", port = 8080 }", "");
    let config = parse("lb.toml", &text).expect("valid");
    let pool = &config.cluster.pools[0];
    assert!(pool.backends.is_empty());
    let d = pool.discovery.as_ref().expect("discovery");
    assert_eq!(
        (d.name.as_str(), d.record, d.port),
        ("app.service.consul", RecordType::A, 8080)
    );
    assert!(d.resolvers.is_empty());
    assert_eq!(d.interval, DiscoverySpec::DEFAULT_INTERVAL);
    assert_eq!(d.min_ttl, DiscoverySpec::DEFAULT_MIN_TTL);
    assert_eq!(d.nxdomain_hold, DiscoverySpec::DEFAULT_NXDOMAIN_HOLD);
    assert_eq!(Command::Bootstrap(config.cluster).format_needed(), 6);
    let full = file(
        "{ name = \"_app._tcp.example.org.\", type = \"SRV\", resolvers = [\"127.0.0.53:5353\", \"10.0.0.2\"], \
         interval = \"10s\", min_ttl = \"2s\", nxdomain_hold = \"1m\", timeout = \"500ms\" }",
        "backends = [{ address = \"10.0.0.1:80\" }]\n",
    );
    let config = parse("lb.toml", &full).expect("valid");
    let d = config.cluster.pools[0].discovery.clone().expect("discovery");
    assert_eq!((d.record, d.port), (RecordType::Srv, 0));
    assert_eq!(
        d.resolvers,
        vec!["127.0.0.53:5353".parse().unwrap(), "10.0.0.2:53".parse().unwrap()]
    );
    assert_eq!(d.nxdomain_hold, Duration::from_secs(60));
    assert_eq!(d.timeout, Duration::from_millis(500));
}

#[test]
fn bad_keys_are_refused_naming_file_key_and_reason() {
    let cases = [
        ("{ port = 80 }", "pool[0].discovery.name: missing required key"),
        (
            "{ name = \"a..b\", port = 80 }",
            "pool[0].discovery.name: \"a..b\" is not a DNS name",
        ),
        (
            "{ name = \"a\" }",
            "pool[0].discovery.port: type = \"A\" needs the backends' port",
        ),
        (
            "{ name = \"a\", type = \"SRV\", port = 80 }",
            "pool[0].discovery.port: type = \"SRV\" takes each backend's port from its SRV record",
        ),
        (
            "{ name = \"a\", type = \"MX\", port = 80 }",
            "pool[0].discovery.type",
        ),
        (
            "{ name = \"a\", port = 80, resolvers = [\"nowhere\"] }",
            "pool[0].discovery.resolvers[0]: \"nowhere\" is not a resolver address",
        ),
        (
            "{ name = \"a\", port = 80, interval = \"0s\" }",
            "pool[0].discovery.interval",
        ),
        (
            "{ name = \"a\", port = 80, ttl = \"1s\" }",
            "pool[0].discovery.ttl: unknown key",
        ),
    ];
    for (discovery, expected) in cases {
        let shown = errors(&file(discovery, ""));
        assert!(shown.contains("lb.toml:"), "{shown}");
        assert!(shown.contains(expected), "{discovery}: {shown}");
    }
    // Without discovery, backends stay required.
    let none = "[node]\nid = 1\n\n[[pool]]\nname = \"app\"\n";
    assert!(errors(none).contains("pool[0].backends: missing required key"));
}

#[test]
fn an_a_answer_is_the_addresses_on_the_port_sorted_and_capped() {
    let spec = DiscoverySpec {
        port: 8080,
        ..DiscoverySpec::default()
    };
    let set = backends_of(&spec, &[a(3), a(1), a(2), a(1)]);
    assert_eq!(set, vec![at(1, 8080, 1), at(2, 8080, 1), at(3, 8080, 1)]);
    let many: Vec<Record> = (0..2000u32)
        .map(|i| Record {
            address: IpAddr::from([10, 1, (i >> 8) as u8, i as u8]),
            ..a(0)
        })
        .collect();
    assert_eq!(backends_of(&spec, &many).len(), MAX_DISCOVERED);
}

#[test]
fn an_srv_answer_keeps_the_lowest_priority_and_its_weights() {
    let spec = DiscoverySpec {
        record: RecordType::Srv,
        ..DiscoverySpec::default()
    };
    let records = [
        srv(1, 9001, 10, 1),
        srv(2, 9002, 10, 3),
        srv(3, 9003, 20, 50),
        srv(4, 9004, 10, 0),
    ];
    assert_eq!(
        backends_of(&spec, &records),
        vec![at(1, 9001, 1), at(2, 9002, 3), at(4, 9004, 1)]
    );
    // A record no backend can be is left out.
    assert_eq!(
        backends_of(&spec, &[srv(1, 0, 0, 1), srv(2, 9002, 0, 1)]),
        vec![at(2, 9002, 1)]
    );
    // Weights above the largest a backend takes are scaled together.
    let big = [srv(1, 1, 0, 65535), srv(2, 1, 0, 6553)];
    assert_eq!(backends_of(&spec, &big), vec![at(1, 1, 1000), at(2, 1, 99)]);
}

#[test]
fn a_change_is_one_command_replacing_only_the_discovered_backends() {
    let mut state = state(
        "{ name = \"app.example\", port = 80 }",
        "backends = [{ address = \"10.0.0.9:80\" }]\n",
    );
    let first = vec![at(1, 80, 1), at(2, 80, 1), at(9, 80, 1)];
    assert!(state.apply(update(Some(first))).is_applied());
    let p = pool(&state);
    let addresses: Vec<String> = p
        .backends
        .iter()
        .map(|b| format!("{} {}", b.address, b.discovered))
        .collect();
    // The static 10.0.0.9 wins over the same address discovered.
    assert_eq!(
        addresses,
        ["10.0.0.9:80 false", "10.0.0.1:80 true", "10.0.0.2:80 true"]
    );
    assert_eq!(p.discovery_status.changes, 1);
    // The same set again changes nothing but the status.
    assert!(
        state
            .apply(update(Some(vec![at(2, 80, 1), at(1, 80, 1)])))
            .is_applied()
    );
    assert_eq!(pool(&state).discovery_status.changes, 1);
    // Emptied: the static backend stays.
    assert!(state.apply(update(Some(Vec::new()))).is_applied());
    assert_eq!(pool(&state).backends.len(), 1);
    assert_eq!(pool(&state).discovery_status.changes, 2);
    // Only a pool with discovery takes one; a set stays bounded.
    let other = Command::SetDiscovered(DiscoveryUpdate {
        pool: "nope".into(),
        backends: None,
        last_good_ms: 0,
        failure: None,
    });
    assert!(!state.apply(other).is_applied());
    let too_many: Vec<Discovered> = (0..=MAX_DISCOVERED as u32)
        .map(|i| Discovered {
            address: SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 80)),
            weight: 1,
        })
        .collect();
    assert!(!state.apply(update(Some(too_many))).is_applied());
}

#[test]
fn files_and_ctl_commands_leave_discovered_backends_alone() {
    let mut state = state("{ name = \"app.example\", port = 80 }", "");
    assert!(
        state
            .apply(update(Some(vec![at(1, 80, 1), at(2, 80, 1)])))
            .is_applied()
    );
    let file_spec = parse("lb.toml", &file("{ name = \"app.example\", port = 80 }", ""))
        .unwrap()
        .cluster;
    // The file (no backends) against the cluster (two discovered): no difference.
    assert_eq!(diff(state.spec(), &file_spec), Vec::<Command>::new());
    // A changed setting becomes an UpdatePool, which keeps them.
    let mut changed = file_spec.clone();
    changed.pools[0].connect_timeout = Duration::from_secs(9);
    changed.pools[0]
        .backends
        .push(BackendSpec::new("10.0.0.7:80".parse().unwrap()));
    let commands = diff(state.spec(), &changed);
    assert!(state.apply(Command::Batch(commands)).is_applied());
    let p = pool(&state);
    assert_eq!(p.backends.iter().filter(|b| b.discovered).count(), 2);
    assert_eq!(p.backends.len(), 3);
    assert_eq!(p.discovery_status.changes, 1);
    // Removing or weighing a discovered backend is refused; draining it is not.
    let address: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let remove = Command::RemoveBackend {
        pool: "app".into(),
        address,
    };
    assert!(
        state
            .apply(remove)
            .rejection()
            .contains("found by the pool's discovery")
    );
    let weigh = Command::SetWeight {
        pool: "app".into(),
        address,
        weight: 5,
    };
    assert!(!state.apply(weigh).is_applied());
    let mut fake = BackendSpec::new("10.0.0.8:80".parse().unwrap());
    fake.discovered = true;
    let add = Command::AddBackend {
        pool: "app".into(),
        backend: fake,
    };
    assert!(!state.apply(add).is_applied());
    // Without discovery the pool loses its discovered backends.
    let mut without = pool(&state).clone();
    without.discovery = None;
    assert!(state.apply(Command::UpdatePool(without)).is_applied());
    assert!(pool(&state).backends.iter().all(|b| !b.discovered));
}

#[test]
fn failures_keep_the_set_and_nxdomain_empties_it_after_its_hold() {
    let mut state = state(
        "{ name = \"app.example\", port = 80, nxdomain_hold = \"30s\" }",
        "",
    );
    let good = Answer::Records(vec![a(1), a(2)]);
    let t0 = 1_000_000;
    let first = decide(pool(&state), &good, t0).expect("a new set");
    assert_eq!(first.backends.as_ref().map(Vec::len), Some(2));
    assert!(state.apply(Command::SetDiscovered(first)).is_applied());
    // Unchanged and fresh: nothing to say.
    assert_eq!(decide(pool(&state), &good, t0 + 1_000), None);
    // Only unusable records: an empty answer, the set kept.
    let unusable = Answer::Records(vec![Record {
        address: IpAddr::from([0, 0, 0, 0]),
        ..a(0)
    }]);
    let kept = decide(pool(&state), &unusable, t0 + 1_000).expect("a failure");
    assert_eq!(
        (kept.backends, kept.failure),
        (None, Some((DiscoveryFailure::Empty, t0 + 1_000)))
    );
    // Refreshed after 30 s.
    let refresh = decide(pool(&state), &good, t0 + 31_000).expect("refresh");
    assert_eq!((refresh.backends, refresh.last_good_ms), (None, t0 + 31_000));
    for failure in [
        DiscoveryFailure::Timeout,
        DiscoveryFailure::ServFail,
        DiscoveryFailure::Empty,
    ] {
        let failed = decide(pool(&state), &Answer::Failed(failure), t0 + 2_000).expect("failure starts");
        assert_eq!(failed.backends, None, "{failure:?} keeps the set");
        assert_eq!(failed.failure, Some((failure, t0 + 2_000)));
        assert_eq!(failed.last_good_ms, t0);
        assert!(state.apply(Command::SetDiscovered(failed)).is_applied());
        // Said once, not every round.
        assert_eq!(decide(pool(&state), &Answer::Failed(failure), t0 + 9_000), None);
        assert_eq!(pool(&state).backends.len(), 2);
    }
    let nx = Answer::Failed(DiscoveryFailure::NxDomain);
    let started = decide(pool(&state), &nx, t0 + 10_000).expect("nxdomain starts");
    assert_eq!(started.backends, None);
    assert!(state.apply(Command::SetDiscovered(started)).is_applied());
    assert_eq!(decide(pool(&state), &nx, t0 + 39_000), None, "still held");
    let emptied = decide(pool(&state), &nx, t0 + 40_000).expect("hold over");
    assert_eq!(emptied.backends, Some(Vec::new()));
    assert_eq!(emptied.failure, Some((DiscoveryFailure::NxDomain, t0 + 10_000)));
    assert!(state.apply(Command::SetDiscovered(emptied)).is_applied());
    assert!(pool(&state).backends.is_empty());
    assert_eq!(decide(pool(&state), &nx, t0 + 50_000), None);
    // The name comes back: a new set, the failure cleared.
    let back = decide(pool(&state), &good, t0 + 60_000).expect("back");
    assert_eq!((back.backends.map(|b| b.len()), back.failure), (Some(2), None));
}

#[test]
fn the_next_query_follows_the_ttl_within_interval_and_min_ttl() {
    let spec = DiscoverySpec {
        interval: Duration::from_secs(5),
        min_ttl: Duration::from_secs(1),
        ..DiscoverySpec::default()
    };
    assert_eq!(spec.next_after(None), Duration::from_secs(5));
    assert_eq!(
        spec.next_after(Some(Duration::from_secs(300))),
        Duration::from_secs(5)
    );
    assert_eq!(
        spec.next_after(Some(Duration::from_secs(2))),
        Duration::from_secs(2)
    );
    assert_eq!(spec.next_after(Some(Duration::ZERO)), Duration::from_secs(1));
}

#[test]
fn discovery_needs_format_six() {
    let state = state("{ name = \"app.example\", port = 80 }", "");
    assert_eq!(update(None).format_needed(), 6);
    assert_eq!(Command::UpdatePool(pool(&state).clone()).format_needed(), 6);
    let mut old = ClusterState::default();
    assert!(old.apply(Command::SetClusterVersion(5)).is_applied());
    let refused = old.apply(update(None));
    assert!(
        refused.rejection().contains("needs cluster version 6"),
        "{refused:?}"
    );
}
