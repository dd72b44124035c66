//! One log entry of 100 000 backend commands applies in time linear in its
//! size: each command costs about the same however large the pool already
//! is (no scan of the pool, no copy of the spec per command). The figures
//! are printed; the bounds are generous (a quadratic path takes minutes).

use raftlb_config::{BackendSpec, ClusterState, Command, Outcome, PoolSpec};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BACKENDS: u32 = 100_000;

/// Generous enough for a loaded debug build, far below a quadratic path.
fn bound() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(1)
    }
}

fn address(i: u32) -> SocketAddr {
    let [_, a, b, c] = i.to_be_bytes();
    ([10, a, b, c], 8000).into()
}

/// The example cluster with six more pools: eight in all.
fn state() -> (ClusterState, Vec<String>) {
    let config = raftlb_config::parse("raftlb.toml", include_str!("../../node/examples/raftlb.toml"))
        .expect("the example is valid");
    let mut state = ClusterState::default();
    assert_eq!(
        state.apply(Command::Bootstrap(config.cluster.clone())),
        Outcome::Applied
    );
    let template = config.cluster.pool("app").expect("pool app").clone();
    let mut pools = vec!["app".to_string(), "dns".to_string()];
    for n in 0..6 {
        let name = format!("extra-{n}");
        let pool = PoolSpec {
            name: name.clone(),
            ..template.clone()
        };
        assert_eq!(state.apply(Command::AddPool(pool)), Outcome::Applied);
        pools.push(name);
    }
    (state, pools)
}

fn adds(pools: &[String]) -> Vec<Command> {
    adds_of(BACKENDS, pools)
}

fn adds_of(count: u32, pools: &[String]) -> Vec<Command> {
    (0..count)
        .map(|i| Command::AddBackend {
            pool: pools[i as usize % pools.len()].clone(),
            backend: BackendSpec::new(address(i)),
        })
        .collect()
}

/// Applies `command`, checks it all applied, prints and bounds the time.
fn timed(what: &str, state: &mut ClusterState, command: Command) -> Duration {
    let start = Instant::now();
    let outcome = state.apply(command);
    let took = start.elapsed();
    println!("{what}: {took:.3?}");
    assert!(outcome.is_applied(), "{what}: {}", outcome.rejection());
    assert!(took < bound(), "{what} took {took:?}");
    took
}

#[test]
fn a_hundred_thousand_backend_commands_in_one_entry() {
    let (fresh, pools) = state();
    let before = fresh.spec().backend_count();
    for spread in [1, pools.len()] {
        let targets = &pools[..spread];
        let mut state = fresh.clone();
        timed(
            &format!("batch of {BACKENDS} adds over {spread} pools"),
            &mut state,
            Command::Batch(adds(targets)),
        );
        assert_eq!(state.spec().backend_count(), before + BACKENDS as usize);
        let mut state = fresh.clone();
        let group = Command::Independent(adds(targets));
        timed(
            &format!("independent {BACKENDS} adds over {spread} pools"),
            &mut state,
            group,
        );
        assert_eq!(state.spec().backend_count(), before + BACKENDS as usize);
    }
    // Then the same backends changed and removed, one pool.
    let mut state = fresh;
    assert!(state.apply(Command::Independent(adds(&pools[..1]))).is_applied());
    let each =
        |f: fn(SocketAddr) -> Command| Command::Independent((0..BACKENDS).map(address).map(f).collect());
    let weight = |address| Command::SetWeight {
        pool: "app".into(),
        address,
        weight: 2,
    };
    let remove = |address| Command::RemoveBackend {
        pool: "app".into(),
        address,
    };
    timed(
        &format!("independent {BACKENDS} weights, one pool"),
        &mut state,
        each(weight),
    );
    timed(
        &format!("independent {BACKENDS} removals, one pool"),
        &mut state,
        each(remove),
    );
    assert_eq!(state.spec().backend_count(), before);
    let batch = Command::Batch(adds(&pools[..1]));
    assert!(state.apply(batch).is_applied());
    let batch_remove = Command::Batch((0..BACKENDS).map(address).map(remove).collect());
    timed(
        &format!("batch of {BACKENDS} removals, one pool"),
        &mut state,
        batch_remove,
    );
    assert_eq!(state.spec().backend_count(), before);
}

#[test]
fn ten_times_the_commands_take_about_ten_times_as_long() {
    let (fresh, pools) = state();
    let one_pool = &pools[..1];
    let mut times = Vec::new();
    for count in [BACKENDS / 10, BACKENDS] {
        let mut state = fresh.clone();
        let group = Command::Independent(adds_of(count, one_pool));
        times.push(timed(
            &format!("independent {count} adds, one pool"),
            &mut state,
            group,
        ));
    }
    // Linear: about 10; a quadratic path: about 100.
    let ratio = times[1].as_secs_f64() / times[0].as_secs_f64().max(1e-6);
    println!("ratio {ratio:.1}");
    assert!(ratio < 30.0, "ratio {ratio:.1}");
}
