//! The VIP's safety rests on this: while a leader is confirming its
//! leadership (and so renewing its VIP lease), no other node can become
//! leader. Voters refuse votes for one vote lease (one election timeout)
//! after they last heard the leader, but openraft never refreshes a
//! leader's own lease, so a long-standing leader would grant a vote at
//! once, even more so once a candidate's higher term has deposed it;
//! raftlb's Raft service refuses it instead, for a vote lease after its
//! last confirmation. Here a follower is made to stand while the leader is
//! healthy, without asking first (no pre-vote): within a vote lease of the
//! old leader's latest quorum confirmation (its VIP lease is two thirds of
//! that), it must not win.

mod common;

use common::Nodes;
use std::time::{Duration, Instant};

/// The default election timeout (`[cluster] election_timeout`): the vote lease.
const LEASE: Duration = Duration::from_millis(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_election_cannot_win_while_the_leader_holds_its_lease() {
    let cluster = Nodes::start("lease-test").await;
    let leader = cluster.leader().await;
    // Lead long past openraft's own lease on the leader's vote (150 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.leader().await, leader, "leadership moved on its own");
    let challenger = (1..=3).find(|id| *id != leader).expect("a follower");
    // What the old leader's VIP lease is counted from: its latest quorum
    // confirmation (a starved leader may have confirmed long ago, and then
    // its lease may have run out before the election was even forced).
    let leadership = cluster.node(leader).vip_control().leadership;
    let mut confirmed = leadership.borrow().confirmed_at;

    let forced = Instant::now();
    cluster
        .node(challenger)
        .raft()
        .trigger()
        .elect()
        .await
        .expect("trigger an election");
    // Whoever leads next, not before the old leader's lease can have expired.
    let next = loop {
        let leaders: Vec<(u64, u64)> = cluster
            .nodes
            .iter()
            .filter_map(|n| {
                let m = n.raft_metrics().borrow().clone();
                (m.state == openraft::ServerState::Leader && m.id != leader).then_some((m.id, m.current_term))
            })
            .collect();
        if let Some(&(id, _)) = leaders.first() {
            break Some((id, Instant::now()));
        }
        confirmed = confirmed.max(leadership.borrow().confirmed_at);
        if forced.elapsed() > Duration::from_secs(3) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    if let Some((id, won)) = next {
        let confirmed = confirmed.expect("the old leader had confirmed its leadership");
        let after = won.duration_since(confirmed);
        println!(
            "node {id} became leader {:?} after the forced election, {after:?} after the old leader's last confirmation",
            won.duration_since(forced)
        );
        assert!(
            after >= LEASE,
            "node {id} won {after:?} after the old leader's last confirmation, within its lease ({LEASE:?})"
        );
    }
    // And the cluster still has a leader afterwards (the old one, or the
    // challenger once the lease has run out).
    common::wait_for(
        "a leader after the forced election",
        Duration::from_secs(5),
        || {
            cluster
                .nodes
                .iter()
                .any(|n| n.raft_metrics().borrow().state == openraft::ServerState::Leader)
        },
    )
    .await;
    let terms: Vec<(u64, u64, openraft::ServerState)> = cluster
        .nodes
        .iter()
        .map(|n| {
            let m = n.raft_metrics().borrow().clone();
            (m.id, m.current_term, m.state)
        })
        .collect();
    println!("after: {terms:?}");
    cluster.stop().await;
}
