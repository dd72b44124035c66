//! Sticky tables are bounded: the `[pool.sticky]` bounds (`max_entries`,
//! `learn_rate`, `learn_burst`) with their defaults and errors, and the
//! table's eviction rule — a new session in a full table evicts the entry
//! with the smallest (time, key) — checked against a model of the rule,
//! across a snapshot taken mid-log, and when `max_entries` is lowered.

use proptest::prelude::*;
use raftlb_config::{
    Algorithm, BackendSpec, ClusterSpec, ClusterState, Command, HttpLimits, ListenerSpec, Outcome, PoolSpec,
    Protocol, StickyChange, StickyKey, StickyKind, StickyPolicy, StickyTables, parse,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const TTL_MS: u64 = 60_000;

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn config(protocol: &str, sticky: &str) -> Result<StickyPolicy, Vec<String>> {
    let text = format!(
        "[node]\nid = 1\ndata_dir = \"./data\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"{protocol}\"\nbind = \"127.0.0.1:8080\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n\n\
         [pool.sticky]\n{sticky}"
    );
    parse("lb.toml", &text)
        .map(|c| c.cluster.pools[0].sticky.clone().expect("a sticky pool"))
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

#[test]
fn file_bounds_and_their_defaults() {
    let policy = config("http", "kind = \"header\"\nname = \"X-S\"\n").unwrap();
    assert_eq!(
        (policy.max_entries, policy.learn_rate, policy.learn_burst),
        (1_000_000, 1000, 1000)
    );
    // The burst follows the rate unless given.
    let policy = config("udp", "kind = \"source_ip\"\nlearn_rate = 50\n").unwrap();
    assert_eq!((policy.learn_rate, policy.learn_burst), (50, 50));
    let policy = config(
        "http",
        "kind = \"learn_cookie\"\nname = \"sid\"\nmax_entries = 1000\nlearn_rate = 200\nlearn_burst = 20\n",
    )
    .unwrap();
    assert_eq!(
        (policy.max_entries, policy.learn_rate, policy.learn_burst),
        (1000, 200, 20)
    );
}

#[test]
fn file_errors_name_the_bound() {
    let cases = [
        (
            "kind = \"header\"\nname = \"X-S\"\nmax_entries = 0\n",
            "pool[0].sticky.max_entries: 0 is out of range (expected 1 to 67108864)",
        ),
        (
            "kind = \"header\"\nname = \"X-S\"\nmax_entries = 100000000\n",
            "pool[0].sticky.max_entries: 100000000 is out of range (expected 1 to 67108864)",
        ),
        (
            "kind = \"source_ip\"\nlearn_rate = 0\n",
            "pool[0].sticky.learn_rate: 0 is out of range (expected 1 to 1000000)",
        ),
        (
            "kind = \"source_ip\"\nlearn_burst = -3\n",
            "pool[0].sticky.learn_burst: -3 is out of range",
        ),
        (
            "kind = \"header\"\nname = \"X-S\"\nmax_entries = \"many\"\n",
            "pool[0].sticky.max_entries",
        ),
        (
            "kind = \"cookie\"\nmax_entries = 10\n",
            "pool[0].sticky.max_entries: \"max_entries\" does not apply to kind = \"cookie\"",
        ),
        (
            "kind = \"cookie\"\nlearn_rate = 10\n",
            "pool[0].sticky.learn_rate: \"learn_rate\" does not apply to kind = \"cookie\"",
        ),
    ];
    for (sticky, expected) in cases {
        let errors = config("http", sticky).expect_err(sticky);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(expected) && e.starts_with("lb.toml:")),
            "{sticky:?}: expected {expected:?} in {errors:?}"
        );
    }
}

fn seeded(max_entries: u64) -> ClusterState {
    let mut policy = StickyPolicy::new(StickyKind::Header, "X-Session");
    policy.ttl = Duration::from_millis(TTL_MS);
    policy.max_entries = max_entries;
    let pool = PoolSpec {
        name: "app".to_string(),
        algorithm: Algorithm::RoundRobin,
        hash_key: Default::default(),
        backends: vec![BackendSpec::new(addr(9001)), BackendSpec::new(addr(9002))],
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
    };
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
    let mut state = ClusterState::default();
    let seed = ClusterSpec {
        listeners: vec![listener],
        pools: vec![pool],
        gslb: None,
    };
    assert_eq!(state.apply(Command::Bootstrap(seed)), Outcome::Applied);
    state
}

fn key(n: u8) -> StickyKey {
    StickyKey::of(&[n])
}

fn stick(n: u8, port: u16, replaces: Option<u16>, at_ms: u64) -> Command {
    Command::Sticky(StickyChange::Stick {
        pool: "app".to_string(),
        key: key(n),
        backend: addr(port),
        replaces: replaces.map(addr),
        at_ms,
    })
}

/// Which of keys `0..n` the table holds.
fn held(tables: &StickyTables, n: u8) -> Vec<u8> {
    (0..n)
        .filter(|k| tables.lookup("app", &key(*k)).is_some())
        .collect()
}

#[test]
fn a_full_table_evicts_its_oldest_session() {
    let mut state = seeded(3);
    let tables = StickyTables::default();
    for (n, at_ms) in [(0, 1_000), (1, 3_000), (2, 2_000)] {
        assert!(
            state
                .apply_with(stick(n, 9001, None, at_ms), &tables)
                .is_applied()
        );
    }
    // Full: session 3 evicts 0, the oldest.
    assert!(
        state
            .apply_with(stick(3, 9002, None, 4_000), &tables)
            .is_applied()
    );
    assert_eq!(held(&tables, 10), [1, 2, 3]);
    // A refresh makes 2 young again, so 4 evicts 1, now the oldest.
    assert!(
        state
            .apply_with(stick(2, 9001, Some(9001), 5_000), &tables)
            .is_applied()
    );
    assert!(
        state
            .apply_with(stick(4, 9001, None, 6_000), &tables)
            .is_applied()
    );
    assert_eq!(held(&tables, 10), [2, 3, 4]);
    // A refused stick (another node stuck 3 first) evicts nothing; a moved
    // session is no new one and evicts nothing either.
    let before = tables.stats();
    assert!(
        !state
            .apply_with(stick(3, 9001, None, 7_000), &tables)
            .is_applied()
    );
    assert_eq!(tables.stats(), before);
    assert!(
        state
            .apply_with(stick(3, 9001, Some(9002), 7_000), &tables)
            .is_applied()
    );
    assert_eq!(held(&tables, 10), [2, 3, 4]);
    // A new session older than every entry still gets in (the oldest
    // existing one goes), and is the next to go.
    assert!(state.apply_with(stick(5, 9001, None, 10), &tables).is_applied());
    assert_eq!(held(&tables, 10), [3, 4, 5]);
    assert!(
        state
            .apply_with(stick(6, 9001, None, 8_000), &tables)
            .is_applied()
    );
    assert_eq!(held(&tables, 10), [3, 4, 6]);
    assert_eq!(tables.stats()[0].entries, 3);
}

#[test]
fn equal_times_are_evicted_in_key_order() {
    let mut state = seeded(2);
    let tables = StickyTables::default();
    let (mut a, mut b) = (1u8, 2u8);
    if key(b) < key(a) {
        std::mem::swap(&mut a, &mut b);
    }
    assert!(state.apply_with(stick(b, 9001, None, 500), &tables).is_applied());
    assert!(state.apply_with(stick(a, 9001, None, 500), &tables).is_applied());
    assert!(state.apply_with(stick(9, 9001, None, 600), &tables).is_applied());
    assert!(
        tables.lookup("app", &key(a)).is_none(),
        "the smaller key goes first"
    );
    assert!(tables.lookup("app", &key(b)).is_some());
}

#[test]
fn lowering_max_entries_trims_the_oldest_at_the_next_expiry() {
    let mut state = seeded(100);
    let tables = StickyTables::default();
    for n in 0..50u8 {
        state.apply_with(stick(n, 9001, None, 1_000 + u64::from(n)), &tables);
    }
    let mut pool = state.spec().pools[0].clone();
    if let Some(policy) = &mut pool.sticky {
        policy.max_entries = 10;
    }
    assert!(state.apply(Command::UpdatePool(pool)).is_applied());
    assert_eq!(tables.stats()[0].entries, 50, "nothing happens before a change");
    let expire = Command::Sticky(StickyChange::Expire { now_ms: 2_000 });
    assert!(state.apply_with(expire, &tables).is_applied());
    assert_eq!(held(&tables, 50), (40..50).collect::<Vec<_>>());
}

/// A step of a log that sticks (key, backend, replaces, time) or expires.
#[derive(Debug, Clone)]
enum Step {
    Stick(u8, u16, Option<u16>, u64),
    Expire(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let port = prop_oneof![Just(9001u16), Just(9002u16)];
    prop_oneof![
        // Few keys and coarse times: refreshes, races and ties happen.
        12 => (0u8..40, port.clone(), proptest::option::of(port), (0u64..40).prop_map(|t| t * 1_000))
            .prop_map(|(k, p, r, t)| Step::Stick(k, p, r, t)),
        1 => (0u64..120).prop_map(|t| Step::Expire(t * 1_000)),
    ]
}

impl Step {
    fn command(&self) -> Command {
        match *self {
            Step::Stick(n, port, replaces, at_ms) => stick(n, port, replaces, at_ms),
            Step::Expire(now_ms) => Command::Sticky(StickyChange::Expire { now_ms }),
        }
    }
}

/// The rule, written plainly: key → (backend port, time).
#[derive(Default)]
struct Model(BTreeMap<StickyKey, (u16, u64)>);

impl Model {
    fn evict(&mut self, keep: usize) {
        while self.0.len() > keep {
            let oldest = self.0.iter().map(|(k, (_, t))| (*t, *k)).min().expect("an entry");
            self.0.remove(&oldest.1);
        }
    }

    fn apply(&mut self, step: &Step, max: usize) -> bool {
        match *step {
            Step::Stick(n, port, replaces, at_ms) => match self.0.get(&key(n)).copied() {
                Some((current, _)) if current != port && replaces != Some(current) => false,
                Some((current, t)) => {
                    let at_ms = if current == port { t.max(at_ms) } else { at_ms };
                    self.0.insert(key(n), (port, at_ms));
                    true
                }
                None => {
                    self.evict(max - 1);
                    self.0.insert(key(n), (port, at_ms));
                    true
                }
            },
            Step::Expire(now_ms) => {
                self.0.retain(|_, (_, t)| *t + TTL_MS > now_ms);
                self.evict(max);
                true
            }
        }
    }
}

fn same_as_model(tables: &StickyTables, model: &Model) -> Result<(), TestCaseError> {
    for n in 0..40 {
        let held = tables.lookup("app", &key(n)).map(|s| (s.backend.port(), s.at_ms));
        prop_assert_eq!(held, model.0.get(&key(n)).copied(), "key {}", n);
    }
    let entries = tables.stats().first().map_or(0, |t| t.entries);
    prop_assert_eq!(entries, model.0.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Every node applying the log holds what the rule says after every
    /// entry, and so does a node that starts from a snapshot taken midway.
    #[test]
    fn eviction_follows_the_rule_on_every_node(
        max in 1u64..8,
        log in prop::collection::vec(step(), 1..120),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut state = seeded(max);
        let (tables, model) = (StickyTables::default(), &mut Model::default());
        let cut = cut.index(log.len());
        let mut joiner: Option<(ClusterState, StickyTables)> = None;
        for (i, step) in log.iter().enumerate() {
            if i == cut {
                let restored = StickyTables::default();
                restored.restore(&tables.snapshot_into(Vec::new()).unwrap()).unwrap();
                joiner = Some((state.clone(), restored));
            }
            let applied = state.apply_with(step.command(), &tables).is_applied();
            prop_assert_eq!(applied, model.apply(step, max as usize), "{:?}", step);
            same_as_model(&tables, model)?;
            prop_assert!(model.0.len() <= max as usize);
            if let Some((joiner_state, joiner_tables)) = &mut joiner {
                joiner_state.apply_with(step.command(), joiner_tables);
                prop_assert_eq!(joiner_tables.stats(), tables.stats());
            }
        }
    }
}
