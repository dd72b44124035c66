//! The batching proposer against a real 3-node control plane in this
//! process (real sled stores, real gRPC on loopback): a burst of proposals
//! on a follower is forwarded to the leader in a few log entries, not one
//! each, and every proposal gets its own outcome.

mod common;

use common::{Nodes, wait_for};
use raftlb_config::{BackendSpec, Command, Outcome};
use std::net::SocketAddr;
use std::time::Duration;

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
    let leader = cluster.leader();
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
