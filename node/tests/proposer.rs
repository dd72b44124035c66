//! The batching proposer against a real 3-node control plane in this
//! process (real sled stores, real gRPC on loopback): a burst of proposals
//! on a follower is forwarded to the leader in a few log entries, not one
//! each, and every proposal gets its own outcome; a flood of sticky
//! sessions fills only its own share of the queue, and a health verdict
//! proposed meanwhile rides ahead of it.

mod common;

use common::{Nodes, wait_for};
use raftlb_config::{BackendSpec, Command, Outcome, StickyChange, StickyKey};
use raftlb_node::control::proposer::{ProposeError, STICKY_SHARE};
use raftlb_node::sticky::metrics::now_ms;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PROPOSALS: u16 = 400;

fn backend(n: u16) -> Command {
    Command::AddBackend {
        pool: "app".into(),
        backend: BackendSpec::new(SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 80))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_follower_commits_in_few_entries_with_one_outcome_each() {
    let cluster = Nodes::start("proposer-test").await;
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.raft_metrics().borrow().id != leader)
        .expect("a follower");
    let log_before = follower.raft_metrics().borrow().last_log_index.unwrap_or(0);

    let mut waiting = Vec::new();
    for n in 0..PROPOSALS {
        let proposer = follower.proposer();
        waiting.push(tokio::spawn(async move { proposer.propose(backend(n)).await }));
    }
    // A proposal that must fail on its own without failing its batch.
    let proposer = follower.proposer();
    let doomed = proposer.propose(Command::RemovePool { name: "nope".into() });
    match doomed.await {
        Ok((_, Outcome::Rejected(reason))) => assert!(reason.contains("nope"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    for proposal in waiting {
        let (_, outcome) = proposal.await.expect("task").expect("committed");
        assert_eq!(outcome, Outcome::Applied);
    }

    wait_for(
        "every node applies every proposal",
        Duration::from_secs(10),
        || {
            cluster.nodes.iter().all(|n| {
                let applied = n.applied();
                let applied = applied.borrow();
                applied.state.spec().pools[0].backends.len() == usize::from(PROPOSALS) + 1
            })
        },
    )
    .await;
    let entries = follower.raft_metrics().borrow().last_log_index.unwrap_or(0) - log_before;
    println!(
        "{} proposals from a follower took {entries} log entries",
        PROPOSALS + 1
    );
    assert!(
        entries <= u64::from(PROPOSALS) / 4,
        "{entries} log entries for {} proposals: the proposer is not batching",
        PROPOSALS + 1
    );
    cluster.stop().await;
}

const STICKY_POOL: &str = "[[listener]]\nname = \"s\"\nprotocol = \"http\"\nbind = \"127.0.0.1:3\"\npool = \"s\"\n\n\
    [[pool]]\nname = \"s\"\nbackends = [{ address = \"127.0.0.1:4\" }, { address = \"127.0.0.1:5\" }]\n\n\
    [pool.sticky]\nkind = \"header\"\nname = \"X-Session\"\n";

fn session(n: usize) -> Command {
    Command::Sticky(StickyChange::Stick {
        pool: "s".into(),
        key: StickyKey::of(&n.to_be_bytes()),
        backend: SocketAddr::from(([127, 0, 0, 1], 4 + (n % 2) as u16)),
        replaces: None,
        at_ms: now_ms(),
    })
}

fn verdict(node: u64, up: bool) -> Command {
    Command::ReportHealth {
        node,
        pool: "s".into(),
        address: SocketAddr::from(([127, 0, 0, 1], 4)),
        up,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sessions_fills_its_own_share_and_a_verdict_rides_ahead() {
    let cluster = Nodes::start_with("proposer-shares", STICKY_POOL).await;
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.raft_metrics().borrow().id != leader)
        .expect("a follower");
    let me = follower.raft_metrics().borrow().id;
    let proposer = follower.proposer();

    let mut unloaded = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        let (_, outcome) = proposer
            .propose(verdict(me, i % 2 == 0))
            .await
            .expect("committed");
        assert_eq!(outcome, Outcome::Applied);
        unloaded.push(started.elapsed());
    }
    unloaded.sort();

    // Twice the sessions' share, all at once: the share fills, the rest is shed.
    let flood = 2 * STICKY_SHARE;
    let shed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let sessions: Vec<_> = (0..flood)
        .map(|n| {
            let (proposer, shed) = (proposer.clone(), Arc::clone(&shed));
            tokio::spawn(async move {
                match proposer.propose(session(n)).await {
                    Ok((index, outcome)) => Some((index, outcome.is_applied())),
                    Err(ProposeError::StickyFull) => {
                        shed.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Err(e) => panic!("session {n}: {e}"),
                }
            })
        })
        .collect();
    wait_for("the sessions' share is full", Duration::from_secs(10), || {
        shed.load(Ordering::Relaxed) > 0
    })
    .await;
    let asked = Instant::now();
    let (verdict_index, outcome) = proposer.propose(verdict(me, false)).await.expect("committed");
    let waited = asked.elapsed();
    assert_eq!(outcome, Outcome::Applied);

    let mut committed = Vec::new();
    for session in sessions {
        if let Some((index, applied)) = session.await.expect("task") {
            assert!(applied, "a new session is applied");
            committed.push(index);
        }
    }
    let drained = started.elapsed();
    let shed = shed.load(Ordering::Relaxed);
    let behind = committed.iter().filter(|i| **i > verdict_index).count();
    println!(
        "verdicts unloaded: p50 {:?}, max {:?}; during a flood of {flood} sessions ({shed} shed, \
         {} committed in {drained:?}): {waited:?}, ahead of {behind} sessions queued before it",
        unloaded[unloaded.len() / 2],
        unloaded[unloaded.len() - 1],
        committed.len()
    );
    assert_eq!(shed + committed.len(), flood);
    assert!(shed > 0 && committed.len() >= STICKY_SHARE, "{shed} shed");
    // Without a share of its own the verdict would have been refused, or
    // queued behind every session: here most of the backlog came after it.
    assert!(
        behind >= STICKY_SHARE / 2,
        "only {behind} sessions committed after the verdict"
    );
    cluster.stop().await;
}
