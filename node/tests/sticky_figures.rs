//! The sticky tables' figures, measured on a real 3-node control plane in
//! this process (sled stores, gRPC on loopback) and on the tables alone.
//! Ignored by default; run in release:
//!
//! `cargo test --release -p raftlb-node --test sticky_figures -- --ignored --nocapture`

mod common;

use common::{Nodes, wait_for};
use raftlb_config::{Command, StickyChange, StickyKey, StickyTables};
use raftlb_node::sticky::metrics::now_ms;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const SEED: &str = "[[listener]]\nname = \"s\"\nprotocol = \"http\"\nbind = \"127.0.0.1:3\"\npool = \"s\"\n\n\
    [[pool]]\nname = \"s\"\nbackends = [{ address = \"127.0.0.1:4\" }, { address = \"127.0.0.1:5\" }]\n\n\
    [pool.sticky]\nkind = \"header\"\nname = \"X-Session\"\nttl = \"30m\"\n";

fn stick(n: u64, at_ms: u64) -> Command {
    Command::Sticky(StickyChange::Stick {
        pool: "s".to_string(),
        key: StickyKey::of(&n.to_be_bytes()),
        backend: SocketAddr::from(([127, 0, 0, 1], 4 + (n % 2) as u16)),
        replaces: None,
        at_ms,
    })
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Waits until every node's table holds at least `expected` sessions.
async fn all_applied(cluster: &Nodes, expected: usize) {
    wait_for(
        "every session applied on every node",
        Duration::from_secs(60),
        || {
            cluster.nodes.iter().all(|node| {
                node.sticky_tables()
                    .stats()
                    .first()
                    .is_some_and(|t| t.entries >= expected)
            })
        },
    )
    .await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures: run in release with --ignored --nocapture"]
async fn committed_sessions_per_second_lag_and_sync_cost() {
    let cluster = Nodes::start_with("sticky-figures", SEED).await;
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.raft_metrics().borrow().id != leader)
        .expect("follower");

    // The cost of `sync`: a new session's proposal, awaited, one at a time.
    let mut waits = Vec::new();
    for n in 0..500u64 {
        let started = Instant::now();
        let (_, outcome) = follower
            .proposer()
            .propose(stick(1_000_000_000 + n, now_ms()))
            .await
            .expect("committed");
        assert!(outcome.is_applied());
        waits.push(started.elapsed());
    }
    waits.sort();
    println!(
        "sync: a new session waits p50 {:?}, p99 {:?} for its commit (proposed on a follower, 500 sessions one at a time)",
        percentile(&waits, 0.5),
        percentile(&waits, 0.99)
    );

    // Throughput: every node proposes what its data plane would, without
    // waiting (async), as fast as the proposers take it, for 5 s.
    let total_before: u64 = 500;
    let limit = Arc::new(Semaphore::new(12_000));
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        for node in &cluster.nodes {
            let permit = Arc::clone(&limit).acquire_owned().await.expect("permit");
            let proposer = node.proposer();
            let command = stick(n, now_ms());
            n += 1;
            tokio::spawn(async move {
                let _ = proposer.propose(command).await;
                drop(permit);
            });
        }
    }
    all_applied(&cluster, (total_before + n) as usize).await;
    let elapsed = started.elapsed();
    let hashes: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| node.sticky_tables().stats()[0].hash)
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "tables differ: {hashes:?}"
    );
    println!(
        "throughput: {n} sessions proposed on 3 nodes in 5 s, all applied on all 3 after {:.2} s: {:.0} committed sessions/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    let saturated: Vec<_> = cluster
        .nodes
        .iter()
        .map(|node| node.sticky_metrics().lag())
        .collect();
    println!(
        "  (lag at saturation, {} proposals queued at most: p50 {} ms, p99 {} ms on node 1)",
        12_000, saturated[0].p50_ms, saturated[0].p99_ms
    );

    // Lag at the goal's rate: 50 000 new sessions/s offered evenly (50 every
    // millisecond, spread over the three nodes) for 3 s.
    let rate_started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut offered = 0u64;
    while rate_started.elapsed() < Duration::from_secs(3) {
        tick.tick().await;
        for _ in 0..50 {
            let node = &cluster.nodes[(offered % 3) as usize];
            let proposer = node.proposer();
            let command = stick(n, now_ms());
            n += 1;
            offered += 1;
            tokio::spawn(async move {
                let _ = proposer.propose(command).await;
            });
        }
    }
    all_applied(&cluster, (total_before + n) as usize).await;
    println!(
        "paced: {offered} sessions offered at {:.0}/s",
        offered as f64 / rate_started.elapsed().as_secs_f64()
    );
    for node in &cluster.nodes {
        let lag = node.sticky_metrics().lag();
        println!(
            "replication lag seen by node {}: p50 {} ms, p99 {} ms, max {} ms (last {} sessions applied)",
            node.raft_metrics().borrow().id,
            lag.p50_ms,
            lag.p99_ms,
            lag.max_ms,
            lag.samples
        );
    }
    cluster.stop().await;
}

#[test]
#[ignore = "figures: run in release with --ignored --nocapture"]
fn a_million_sessions_memory_snapshot_and_restore() {
    let spec_state = {
        let config = raftlb_config::parse(
            "f.toml",
            &format!("[node]\nid = 1\ndata_dir = \"/tmp/unused\"\n\n{SEED}"),
        )
        .expect("config");
        let mut state = raftlb_config::ClusterState::default();
        assert!(state.apply(Command::Bootstrap(config.cluster)).is_applied());
        state
    };
    let mut state = spec_state;
    const N: u64 = 1_000_000;
    let before = rss_kib();
    let tables = StickyTables::default();
    let started = Instant::now();
    for n in 0..N {
        state.apply_with(stick(n, 1_700_000_000_000 + n), &tables);
    }
    let applied = started.elapsed();
    let after = rss_kib();
    assert_eq!(tables.stats()[0].entries, N as usize);
    println!(
        "1 M sessions: applied in {:.2} s ({:.0}/s on one core); memory {:.0} B per session (RSS {} → {} KiB)",
        applied.as_secs_f64(),
        N as f64 / applied.as_secs_f64(),
        (after.saturating_sub(before)) as f64 * 1024.0 / N as f64,
        before,
        after
    );
    let started = Instant::now();
    let snapshot = tables.snapshot_into(Vec::new()).expect("snapshot");
    let encoded = started.elapsed();
    let restored = StickyTables::default();
    let started = Instant::now();
    restored.restore(&snapshot).expect("restore");
    let restore = started.elapsed();
    assert_eq!(restored.stats(), tables.stats());
    println!(
        "snapshot of 1 M sessions: {:.1} MB, encoded in {} ms, restored in {} ms",
        snapshot.len() as f64 / 1e6,
        encoded.as_millis(),
        restore.as_millis()
    );
}
