//! Joining at start: a node has joined its cluster once it has applied
//! what the cluster had committed when it asked. The leader learns that by
//! confirming its leadership (a linearizable read: its commit index); a
//! follower asks the leader it knows for the index the leader has applied.
//! Until a leader answers (no quorum yet, leader unknown or unreachable),
//! it asks again, a little less often each time. `/readyz` and systemd's
//! `READY=1` wait for this.

use super::leader_link::LeaderLink;
use super::state_machine::Applied;
use super::types::Raft;
use openraft::ServerState;
use raftlb_proto::admin::StatusRequest;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long one ask may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between asks.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Completes once this node has applied the cluster's commit index as
/// read after the call began; `target` hears that index once known.
pub async fn catch_up(
    raft: &Raft,
    link: &LeaderLink,
    mut applied: watch::Receiver<Arc<Applied>>,
    target: impl FnOnce(u64),
) {
    let mut pause = Duration::from_millis(50);
    let index = loop {
        match tokio::time::timeout(ASK_TIMEOUT, commit_index(raft, link)).await {
            Ok(Ok(index)) => break index,
            Ok(Err(reason)) => tracing::debug!(%reason, "not joined yet"),
            Err(_) => tracing::debug!("not joined yet: no answer within {ASK_TIMEOUT:?}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    };
    target(index);
    let _ = applied
        .wait_for(|a| a.last_applied.map_or(0, |id| id.index) >= index)
        .await;
}

/// The cluster's commit index as the leader knows it now.
async fn commit_index(raft: &Raft, link: &LeaderLink) -> Result<u64, String> {
    if raft.metrics().borrow().state == ServerState::Leader {
        return match raft.ensure_linearizable().await {
            Ok(read) => Ok(read.map_or(0, |id| id.index)),
            Err(e) => Err(e.to_string()),
        };
    }
    let mut leader = link.leader().map_err(|s| s.message().to_string())?;
    let reply = leader
        .status(StatusRequest::default())
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    match reply.state.as_str() {
        "leader" => Ok(reply.applied_index),
        other => Err(format!("node {} is {other}, not the leader", reply.node_id)),
    }
}
