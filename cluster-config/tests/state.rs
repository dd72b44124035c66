//! `ClusterState::apply`: deterministic, atomic, invariant-keeping; snapshots
//! round-trip; `diff` turns any state into any other.

use proptest::prelude::*;
use raftlb_config::diff::diff;
use raftlb_config::{
    AdminState, Algorithm, BackendSpec, ClusterSpec, ClusterState, Command, HttpLimits, ListenerSpec,
    Outcome, PoolSpec, Protocol,
};
use std::net::SocketAddr;
use std::time::Duration;

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn pool(name: &str, ports: &[u16]) -> PoolSpec {
    PoolSpec {
        name: name.to_string(),
        algorithm: Algorithm::RoundRobin,
        hash_key: Default::default(),
        backends: ports.iter().map(|p| BackendSpec::new(addr(*p))).collect(),
        connect_timeout: Duration::from_secs(3),
        response_timeout: Duration::from_secs(60),
        max_connect_attempts: 3,
        sticky: None,
        tls: None,
        backend_protocol: Default::default(),
        health: Default::default(),
        limits: Default::default(),
        proxy_protocol: None,
        discovery: None,
        discovery_status: Default::default(),
    }
}

fn listener(name: &str, port: u16, pool: &str) -> ListenerSpec {
    ListenerSpec {
        name: name.to_string(),
        protocol: Protocol::Http,
        bind: addr(port),
        pool: Some(pool.to_string()),
        routes: Vec::new(),
        max_connections: 100,
        idle_timeout: Duration::from_secs(30),
        http: HttpLimits::default(),
        limits: Default::default(),
        acl: Vec::new(),
        proxy_trusted: Vec::new(),
        quic: Default::default(),
    }
}

fn seeded() -> ClusterState {
    let mut state = ClusterState::default();
    let seed = ClusterSpec {
        listeners: vec![listener("web", 8080, "app")],
        pools: vec![pool("app", &[9001, 9002])],
        gslb: None,
    };
    assert_eq!(state.apply(Command::Bootstrap(seed)), Outcome::Applied);
    state
}

fn rejected(state: &mut ClusterState, command: Command, reason: &str) {
    let before = state.clone();
    match state.apply(command) {
        Outcome::Rejected(r) => assert!(r.contains(reason), "expected {reason:?} in {r:?}"),
        other => panic!("expected rejection ({reason}), got {other:?}"),
    }
    assert_eq!(*state, before, "a rejected command changes nothing");
}

#[test]
fn backend_commands() {
    let mut state = seeded();
    let add = Command::AddBackend {
        pool: "app".into(),
        backend: BackendSpec::new(addr(9003)),
    };
    assert!(state.apply(add.clone()).is_applied());
    rejected(&mut state, add, "already in pool");
    assert!(
        state
            .apply(Command::SetWeight {
                pool: "app".into(),
                address: addr(9003),
                weight: 5
            })
            .is_applied()
    );
    rejected(
        &mut state,
        Command::SetWeight {
            pool: "app".into(),
            address: addr(9003),
            weight: 0,
        },
        "weight 0",
    );
    let drain = Command::SetAdminState {
        pool: "app".into(),
        address: addr(9001),
        state: AdminState::Drain,
    };
    assert!(state.apply(drain).is_applied());
    let backends = &state.spec().pool("app").unwrap().backends;
    assert_eq!((backends[0].state, backends[2].weight), (AdminState::Drain, 5));
    rejected(
        &mut state,
        Command::RemoveBackend {
            pool: "app".into(),
            address: addr(1),
        },
        "no backend 127.0.0.1:1",
    );
    rejected(
        &mut state,
        Command::SetWeight {
            pool: "nope".into(),
            address: addr(9001),
            weight: 2,
        },
        "no pool named",
    );
}

#[test]
fn invariants_hold() {
    let mut state = seeded();
    rejected(
        &mut state,
        Command::RemovePool { name: "app".into() },
        "listener \"web\" uses pool \"app\", which does not exist",
    );
    rejected(
        &mut state,
        Command::AddListener(listener("web2", 8080, "app")),
        "conflicts",
    );
    rejected(
        &mut state,
        Command::AddListener(listener("web2", 8081, "missing")),
        "which does not exist",
    );
    rejected(&mut state, Command::UpdatePool(pool("app", &[])), "no backend");
    rejected(
        &mut state,
        Command::Bootstrap(ClusterSpec::default()),
        "already bootstrapped",
    );
    for port in [9001, 9002] {
        let remove = Command::RemoveBackend {
            pool: "app".into(),
            address: addr(port),
        };
        if port == 9001 {
            assert!(state.apply(remove).is_applied());
        } else {
            rejected(&mut state, remove, "no backend");
        }
    }
}

#[test]
fn batches_are_atomic() {
    let mut state = seeded();
    let good = Command::AddBackend {
        pool: "app".into(),
        backend: BackendSpec::new(addr(9003)),
    };
    let bad = Command::RemoveListener { name: "nope".into() };
    rejected(
        &mut state,
        Command::Batch(vec![good.clone(), bad]),
        "no listener named \"nope\"",
    );
    // Invariants are checked on the batch's result, not between its steps.
    let swap = Command::Batch(vec![
        Command::RemoveListener { name: "web".into() },
        Command::RemovePool { name: "app".into() },
        Command::AddPool(pool("api", &[7000])),
        Command::AddListener(listener("web", 8080, "api")),
    ]);
    assert!(state.apply(swap).is_applied());
    assert_eq!(state.spec().listeners[0].pool.as_deref(), Some("api"));
}

#[test]
fn independent_commands_apply_or_fail_one_by_one() {
    let mut state = seeded();
    let add = |port| Command::AddBackend {
        pool: "app".into(),
        backend: BackendSpec::new(addr(port)),
    };
    let outcome = state.apply(Command::Independent(vec![
        add(9003),
        Command::RemoveListener { name: "nope".into() },
        add(9004),
    ]));
    let Outcome::Each(outcomes) = &outcome else {
        panic!("expected one outcome per command, got {outcome:?}");
    };
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_applied() && outcomes[2].is_applied());
    assert!(
        outcome.rejection().contains("no listener named \"nope\""),
        "{outcome:?}"
    );
    assert!(!outcome.is_applied());
    assert_eq!(
        state.spec().pools[0].backends.len(),
        4,
        "both good commands took effect"
    );
    // An atomic batch cannot hold a group that may half-apply.
    rejected(
        &mut state,
        Command::Batch(vec![Command::Independent(vec![add(9005)])]),
        "cannot be part of an atomic batch",
    );
}

/// A small universe so random commands often touch the same things.
fn command() -> impl Strategy<Value = Command> {
    let pool_name = prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
    let port = 9000u16..9004;
    let leaf = prop_oneof![
        (pool_name.clone(), prop::collection::vec(9000u16..9004, 0..3))
            .prop_map(|(n, ports)| Command::AddPool(pool(&n, &ports))),
        (pool_name.clone(), prop::collection::vec(9000u16..9004, 0..3))
            .prop_map(|(n, ports)| Command::UpdatePool(pool(&n, &ports))),
        pool_name.clone().prop_map(|name| Command::RemovePool { name }),
        (
            prop::sample::select(vec!["l1", "l2"]),
            80u16..82,
            pool_name.clone()
        )
            .prop_map(|(n, p, pool)| Command::AddListener(listener(n, p, &pool))),
        (
            prop::sample::select(vec!["l1", "l2"]),
            80u16..82,
            pool_name.clone()
        )
            .prop_map(|(n, p, pool)| Command::UpdateListener(listener(n, p, &pool))),
        prop::sample::select(vec!["l1", "l2"]).prop_map(|n| Command::RemoveListener { name: n.into() }),
        (pool_name.clone(), port.clone()).prop_map(|(pool, p)| Command::AddBackend {
            pool,
            backend: BackendSpec::new(addr(p))
        }),
        (pool_name.clone(), port.clone()).prop_map(|(pool, p)| Command::RemoveBackend {
            pool,
            address: addr(p)
        }),
        (pool_name.clone(), port.clone(), 0u32..4).prop_map(|(pool, p, weight)| Command::SetWeight {
            pool,
            address: addr(p),
            weight
        }),
        (
            pool_name,
            port,
            prop::sample::select(vec![
                AdminState::Enabled,
                AdminState::Drain,
                AdminState::Maintenance
            ])
        )
            .prop_map(|(pool, p, state)| Command::SetAdminState {
                pool,
                address: addr(p),
                state
            }),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Command::Batch)
    })
}

fn run(commands: &[Command]) -> (ClusterState, Vec<Outcome>) {
    let mut state = ClusterState::default();
    let outcomes = commands.iter().map(|c| state.apply(c.clone())).collect();
    (state, outcomes)
}

/// Listener and pool order carry no meaning; backend order does (round robin).
fn normalized(spec: &ClusterSpec) -> ClusterSpec {
    let mut spec = spec.clone();
    spec.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    spec.pools.sort_by(|a, b| a.name.cmp(&b.name));
    spec
}

proptest! {
    #[test]
    fn same_commands_same_state(commands in prop::collection::vec(command(), 0..40)) {
        let (a, outcomes_a) = run(&commands);
        let (b, outcomes_b) = run(&commands);
        prop_assert_eq!(a.clone(), b);
        prop_assert_eq!(outcomes_a, outcomes_b);
        prop_assert!(raftlb_config::state::check(a.spec()).is_ok());
    }

    #[test]
    fn snapshot_round_trips(commands in prop::collection::vec(command(), 0..40), more in prop::collection::vec(command(), 0..10)) {
        let (mut state, _) = run(&commands);
        let bytes = postcard::to_stdvec(&state).expect("encode");
        let mut restored: ClusterState = postcard::from_bytes(&bytes).expect("decode");
        prop_assert_eq!(&restored, &state);
        for c in more {
            prop_assert_eq!(state.apply(c.clone()), restored.apply(c));
        }
        prop_assert_eq!(restored, state);
    }

    #[test]
    fn commands_round_trip_through_postcard(c in command()) {
        let bytes = postcard::to_stdvec(&c).expect("encode");
        prop_assert_eq!(postcard::from_bytes::<Command>(&bytes).expect("decode"), c);
    }

    #[test]
    fn diff_turns_one_state_into_another(from in prop::collection::vec(command(), 0..30), to in prop::collection::vec(command(), 0..30)) {
        let (mut a, _) = run(&from);
        let (b, _) = run(&to);
        let changes = diff(a.spec(), b.spec());
        prop_assert_eq!(a.apply(Command::Batch(changes)), Outcome::Applied);
        prop_assert_eq!(normalized(a.spec()), normalized(b.spec()));
        prop_assert!(diff(a.spec(), b.spec()).is_empty());
    }
}
