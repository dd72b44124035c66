//! Planned leadership transfer on openraft 0.9, which has no transfer call
//! of its own. The leader steps aside: it stops heartbeats and leadership
//! confirmations (so its VIP lease runs out) and will not stand again for a
//! while; it asks the target to campaign once the other voters' leases on
//! the old leader have run out (a vote lease after the last heartbeat,
//! when they grant votes again); the target triggers an election then, a
//! little before any other follower's turn to ask ([`super::election`]),
//! refuses their pre-votes meanwhile, and wins it. Then the old leader
//! resumes its normal settings as a follower.
//! If the target cannot win, the next candidate is asked, and if none can,
//! the old leader resumes leading; if another voter wins meanwhile (in its
//! own turn), the transfer is done. While it steps aside the old leader
//! does not stand ([`super::election`]).
//!
//! [`Handover`] serves `ctl leader transfer` (from any node: a follower
//! passes it to the leader), the leader's `Campaign` call to the target,
//! and `ctl node drain` (this node hands over, then stops).

use super::election::LeaderContact;
use super::leader_link::{LeaderLink, Redirect};
use super::network::status_text;
use super::types::{NodeId, Raft};
use openraft::ServerState;
use openraft::error::ForwardToLeader;
use raftlb_config::RaftTiming;
use raftlb_proto::admin::CampaignRequest;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// What leadership transfer and drain need.
#[derive(Clone)]
pub struct Handover {
    pub me: NodeId,
    pub raft: Raft,
    pub link: LeaderLink,
    pub timing: RaftTiming,
    /// Set while this node, as leader, steps aside.
    pub standing_down: Arc<AtomicBool>,
    /// A witness never campaigns.
    pub witness: bool,
    /// When this node last heard from a leader (a target waits out the
    /// lease it asked for).
    pub contact: LeaderContact,
    /// Set while this node stands as a transfer's target.
    pub campaigning: Arc<AtomicBool>,
    /// Cancelled when an operator asks this node to drain and stop.
    pub drain: CancellationToken,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover").finish_non_exhaustive()
    }
}

impl Handover {
    /// As leader, hands leadership to `to` (or the most caught-up voter)
    /// and returns the new leader; [`Redirect::ToLeader`] when this node
    /// is not the leader.
    pub async fn hand_over(&self, to: Option<NodeId>) -> Result<NodeId, Redirect> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            let leader_node = metrics
                .current_leader
                .and_then(|id| metrics.membership_config.membership().get_node(&id).cloned());
            return Err(Redirect::ToLeader(ForwardToLeader {
                leader_id: metrics.current_leader,
                leader_node,
            }));
        }
        let candidates = candidates(&self.raft, self.me, to).map_err(Status::failed_precondition)?;
        let membership = metrics.membership_config.membership().clone();
        let after = campaign_delay(self.timing);
        let mut reasons = Vec::new();
        let won = step_aside(&self.raft, &self.standing_down, async {
            for candidate in &candidates {
                let Some(node) = membership.get_node(candidate) else {
                    continue;
                };
                let ask = async {
                    let mut client = self.link.member(*candidate, &node.addr)?;
                    let request = CampaignRequest {
                        after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                    };
                    client.campaign(request).await.map(|_| ())
                };
                // Another voter may win the target's election meanwhile
                // (one that did not hear the target's campaign in time
                // stands in its turn): leadership has moved all the same.
                let answer = tokio::select! {
                    answer = tokio::time::timeout(after + CAMPAIGN_TIMEOUT * 2, ask) => answer,
                    Some(leader) = other_leader(&self.raft, self.me) => return Some(leader),
                };
                match answer {
                    Ok(Ok(())) => return Some(*candidate),
                    Ok(Err(status)) => reasons.push(format!("node {candidate}: {}", status_text(&status))),
                    Err(_) => reasons.push(format!("node {candidate}: no answer")),
                }
            }
            None
        })
        .await
        .ok_or_else(|| Status::aborted("a leadership transfer is already under way"))?;
        won.ok_or_else(|| {
            Redirect::Failed(Status::unavailable(format!(
                "leadership stays here: no candidate won ({})",
                reasons.join("; ")
            )))
        })
    }

    /// The target's side of a transfer: stand for election once the other
    /// voters' leases on the old leader have run out (when this node's
    /// own does, and a quarter heartbeat for theirs, which started a
    /// little later), whatever the caller asks, and say whether this node
    /// won. Meanwhile this node refuses other followers' pre-votes.
    pub async fn campaign(&self, _after_ms: u64) -> Result<(), Status> {
        if self.witness {
            return Err(Status::failed_precondition("a witness never leads"));
        }
        if self.campaigning.swap(true, Ordering::AcqRel) {
            return Err(Status::aborted("this node already stands in a transfer"));
        }
        struct Standing<'a>(&'a AtomicBool);
        impl Drop for Standing<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _standing = Standing(&self.campaigning);
        let after = (self.contact.lease_left() + self.timing.heartbeat_interval / 4).min(MAX_CAMPAIGN_DELAY);
        campaign(&self.raft, after).await.map_err(Status::unavailable)
    }
}

/// Resolves to the leader once this node sees another node lead; `None`
/// if Raft stops.
async fn other_leader(raft: &Raft, me: NodeId) -> Option<NodeId> {
    let mut metrics = raft.metrics();
    loop {
        {
            let seen = metrics.borrow_and_update();
            if let Some(leader) = seen.current_leader
                && leader != me
                && seen.state != ServerState::Leader
            {
                return Some(leader);
            }
        }
        metrics.changed().await.ok()?;
    }
}

/// The longest a target waits for the old leader's lease to run out.
const MAX_CAMPAIGN_DELAY: Duration = Duration::from_secs(10);

/// How long a campaigning node waits to see itself leader.
pub const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after the last heartbeat the target may stand and be heard
/// (the leader's wait for its answer counts from it).
pub fn campaign_delay(timing: RaftTiming) -> Duration {
    timing.vote_lease() + timing.heartbeat_interval
}

/// The voters to hand over to, best first: `to` alone if given, otherwise
/// every other voter, the most caught-up first.
pub fn candidates(raft: &Raft, me: NodeId, to: Option<NodeId>) -> Result<Vec<NodeId>, String> {
    let metrics = raft.metrics().borrow().clone();
    let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
    if let Some(to) = to {
        if to == me {
            return Err(format!("node {me} is already the leader"));
        }
        if !voters.contains(&to) {
            return Err(format!("node {to} is not a voter"));
        }
        return Ok(vec![to]);
    }
    let matched = |id: &NodeId| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).copied().flatten())
            .map_or(0, |log| log.index)
    };
    let mut others: Vec<NodeId> = voters.into_iter().filter(|id| *id != me).collect();
    others.sort_by_key(|id| std::cmp::Reverse(matched(id)));
    if others.is_empty() {
        return Err("there is no other voter to hand leadership to".to_string());
    }
    Ok(others)
}

/// The leader's side around the campaign: quiet while `campaign` runs,
/// itself again afterwards whatever happened, even if the caller gives up
/// on the campaign half-way. `None` if a transfer is already under way.
/// Writes are held back meanwhile ([`Writer::submit`]): committed, they
/// would reach the followers and renew their lease on this node, and the
/// target would lose. A target that loses anyway is retried or fails.
///
/// [`Writer::submit`]: super::writer::Writer::submit
pub async fn step_aside<T>(
    raft: &Raft,
    standing_down: &AtomicBool,
    campaign: impl Future<Output = T>,
) -> Option<T> {
    struct Aside<'a> {
        raft: &'a Raft,
        standing_down: &'a AtomicBool,
    }
    impl Drop for Aside<'_> {
        fn drop(&mut self) {
            self.raft.runtime_config().heartbeat(true);
            self.standing_down.store(false, Ordering::Relaxed);
        }
    }
    if standing_down
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return None;
    }
    raft.runtime_config().heartbeat(false);
    let _aside = Aside { raft, standing_down };
    Some(campaign.await)
}

/// The target's side: wait out the leases, stand, and report whether this
/// node became leader.
pub async fn campaign(raft: &Raft, after: Duration) -> Result<(), String> {
    tokio::time::sleep(after).await;
    raft.trigger()
        .elect()
        .await
        .map_err(|e| format!("cannot stand for election: {e}"))?;
    raft.wait(Some(CAMPAIGN_TIMEOUT))
        .state(ServerState::Leader, "campaign")
        .await
        .map(|_| ())
        .map_err(|_| format!("did not win the election within {CAMPAIGN_TIMEOUT:?}"))
}
