//! When a follower stands for election. openraft's own election timer is
//! off (`enable_elect = false`, see [`super::cluster`]); this task stands
//! instead, and asks first:
//!
//! - Each message a leader's vote backs stamps [`LeaderContact`] (the Raft
//!   service does it) with the lease that leader asks for: how long its
//!   voters must refuse anyone else after hearing it.
//! - Once this node has heard nothing for that lease, plus its turn (half a
//!   heartbeat for each voter of lower id, leader excluded, so two
//!   followers rarely split the vote), it asks every other voter whether
//!   they would vote for it now ([`PreVoteRequest`] over the `PreVote`
//!   RPC). Nobody's term changes.
//! - Only when a majority says yes does it trigger the election, which the
//!   voters then grant at once: their leases have run out.
//!
//! So a node cut off from the others never raises its term, and does not
//! depose a healthy leader when it comes back (openraft 0.9 has no
//! pre-vote); and a follower stands as soon as the leases allow, not a
//! random election timeout later. A voter refuses a pre-vote, and a vote
//! ([`LeaderContact::refuse_vote`]), while its lease on the leader runs.

use super::leadership::Leadership;
use super::log_store::LogStore;
use super::network::Network;
use super::types::{LogId, NodeId, Raft};
use openraft::ServerState;
use raftlb_config::RaftTiming;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What a node asks before it stands: would you vote for me now?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The asker's current term (it would stand in the next).
    pub term: u64,
    /// The asker's last log entry.
    pub last_log_id: Option<LogId>,
}

/// The answer, with the reason when it is no.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteAnswer {
    pub granted: bool,
    /// When refused because a lease still runs: how long it has left.
    pub lease_left: Duration,
    pub reason: String,
}

impl PreVoteAnswer {
    fn yes() -> Self {
        PreVoteAnswer {
            granted: true,
            lease_left: Duration::ZERO,
            reason: String::new(),
        }
    }

    /// What a node of a release without pre-vote answers (Unimplemented):
    /// yes, as far as asking goes; it applies its own lease to the vote.
    pub fn granted_by_earlier_release() -> Self {
        Self::yes()
    }

    fn no(lease_left: Duration, reason: String) -> Self {
        PreVoteAnswer {
            granted: false,
            lease_left,
            reason,
        }
    }
}

/// When this node last heard from a leader, and the lease that leader
/// asked its voters to keep: stamped by the Raft service on every
/// AppendEntries and snapshot a current leader's vote backs. Also when it
/// last granted a vote: a leader is probably about to be heard, so this
/// node neither stands nor grants pre-votes for a vote lease after (it
/// still grants votes: the candidate may be retrying).
#[derive(Debug, Clone, Default)]
pub struct LeaderContact(Arc<Mutex<Contact>>);

#[derive(Debug, Clone, Copy, Default)]
struct Contact {
    /// The last message from a leader, and the lease it asked for.
    heard: Option<(Instant, Duration)>,
    /// The last vote granted.
    voted: Option<Instant>,
}

impl LeaderContact {
    /// A node that has just started. It may have answered a leader just
    /// before it went down and remembers nothing of it, so it counts its
    /// start as a message from a leader asking for `lease`: it neither
    /// votes for another nor claims VIPs as leader before that lease has
    /// run out.
    pub fn started(lease: Duration) -> Self {
        let contact = LeaderContact::default();
        contact.heard(lease);
        contact
    }

    fn get(&self) -> Contact {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn heard(&self, lease: Duration) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).heard = Some((Instant::now(), lease));
    }

    pub fn voted(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).voted = Some(Instant::now());
    }

    /// When the lease on the last leader heard runs out (`None`: no
    /// leader heard since this node started).
    pub fn lease_ends(&self) -> Option<Instant> {
        self.get().heard.map(|(at, lease)| at + lease)
    }

    /// When this node may stand or grant a pre-vote: once the lease on the
    /// leader ran out and a vote lease `lease` passed since its last vote.
    fn quiet_from(&self, lease: Duration) -> Option<Instant> {
        let contact = self.get();
        let heard = contact.heard.map(|(at, lease)| at + lease);
        let voted = contact.voted.map(|at| at + lease);
        heard.max(voted)
    }

    /// How long that lease still runs (zero once it ran out).
    pub fn lease_left(&self) -> Duration {
        self.lease_ends().map_or(Duration::ZERO, |end| {
            end.saturating_duration_since(Instant::now())
        })
    }

    /// Refuses a vote while the lease runs. openraft keeps a lease of its
    /// own (one election timeout); this one is the leader's word, and a
    /// leader of an earlier release asks for two.
    pub fn refuse_vote(&self) -> Result<(), String> {
        match self.lease_left() {
            Duration::ZERO => Ok(()),
            left => Err(format!(
                "vote refused: this node heard from its leader lately, its lease runs {left:?} more"
            )),
        }
    }
}

/// A voter's answer to a pre-vote, from its own standing. `campaigning`:
/// this node is a leadership transfer's target, and stands itself.
pub fn answer(
    raft: &Raft,
    log: &LogStore,
    contact: &LeaderContact,
    leadership: Leadership,
    campaigning: bool,
    timing: RaftTiming,
    request: &PreVoteRequest,
) -> PreVoteAnswer {
    if campaigning {
        return PreVoteAnswer::no(
            timing.heartbeat_interval,
            "this node stands as a leadership transfer's target".to_string(),
        );
    }
    if let Some(at) = leadership.last_confirmed_at
        && at.elapsed() < timing.vote_lease()
    {
        let left = timing.vote_lease().saturating_sub(at.elapsed());
        return PreVoteAnswer::no(left, "this node led, confirmed by a quorum lately".to_string());
    }
    if let Some(quiet) = contact.quiet_from(timing.vote_lease())
        && let left = quiet.saturating_duration_since(Instant::now())
        && !left.is_zero()
    {
        return PreVoteAnswer::no(
            left,
            format!("this node heard from a leader or voted lately ({left:?} to go)"),
        );
    }
    let (state, term) = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        (m.state, m.current_term)
    };
    let last = log.last_log_id();
    if state == ServerState::Leader {
        return PreVoteAnswer::no(timing.heartbeat_interval, "this node leads".to_string());
    }
    if request.term < term {
        return PreVoteAnswer::no(
            Duration::ZERO,
            format!("the asker's term {} is behind this node's {term}", request.term),
        );
    }
    if request.last_log_id < last {
        return PreVoteAnswer::no(
            Duration::ZERO,
            format!(
                "the asker's log ends at {:?}, before this node's {last:?}",
                request.last_log_id
            ),
        );
    }
    PreVoteAnswer::yes()
}

/// How long after its lease ran out a voter asks: half a heartbeat for
/// itself and for every voter of lower id, the leader left out. The first
/// in line asks half a heartbeat after the lease, the next a heartbeat
/// after it, by when it has heard the winner.
fn turn(me: NodeId, voters: &[NodeId], leader: Option<NodeId>, timing: RaftTiming) -> Duration {
    let ahead = voters
        .iter()
        .filter(|id| **id < me && Some(**id) != leader)
        .count();
    timing.heartbeat_interval / 2 * (u32::try_from(ahead).unwrap_or(u32::MAX / 2) + 1)
}

/// What the election task needs.
pub struct Elector {
    pub me: NodeId,
    pub raft: Raft,
    pub log: LogStore,
    pub network: Network,
    pub contact: LeaderContact,
    pub timing: RaftTiming,
    /// Set while this node is a transfer's target: it campaigns by itself.
    pub campaigning: Arc<AtomicBool>,
    /// Set while this node, leader until the transfer began, steps aside:
    /// it must not stand against its own target.
    pub standing_down: Arc<AtomicBool>,
}

/// What one look at the node's standing decided.
enum Next {
    /// Nothing to do before then (or before Raft's metrics change).
    Wait(Duration),
    /// Ask the other voters.
    Ask(Vec<(NodeId, String)>),
    /// The only voter: stand at once.
    Stand,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Elector {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn run(self) {
        let mut metrics = self.raft.metrics();
        let started = Instant::now();
        loop {
            let wait = match self.next(started) {
                Next::Wait(wait) => wait,
                Next::Stand => self.stand().await,
                Next::Ask(others) => match self.ask(&others).await {
                    Ok(()) => {
                        // Not woken by metrics either: after a split vote
                        // they change at once, and the candidates would
                        // meet again.
                        tokio::time::sleep(self.stand().await).await;
                        continue;
                    }
                    Err(wait) => {
                        // Not woken by metrics: they change on every
                        // failed heartbeat of a leader still trying.
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                },
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Whether, and when, to ask: only a voter that is neither leader nor
    /// a transfer's target nor its leader stepping aside, once its lease on
    /// the leader ran out and its turn came (a node that has heard no
    /// leader counts from its start).
    fn next(&self, started: Instant) -> Next {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let idle = Next::Wait(self.timing.vote_lease());
        if metrics.state == ServerState::Leader
            || !voters.contains(&self.me)
            || self.campaigning.load(Ordering::Relaxed)
            || self.standing_down.load(Ordering::Relaxed)
        {
            return idle;
        }
        if voters.len() == 1 {
            return match metrics.state {
                ServerState::Candidate => idle,
                _ => Next::Stand,
            };
        }
        let quiet = self
            .contact
            .quiet_from(self.timing.vote_lease())
            .map_or(started + self.timing.vote_lease(), |at| {
                at.max(started + self.timing.vote_lease())
            });
        let due = quiet + turn(self.me, &voters, metrics.current_leader, self.timing);
        let now = Instant::now();
        if now < due {
            return Next::Wait(due - now);
        }
        let others = voters
            .iter()
            .filter(|id| **id != self.me)
            .filter_map(|id| Some((*id, membership.get_node(id)?.addr.clone())))
            .collect();
        Next::Ask(others)
    }

    /// Asks every other voter at once; `Ok` once a majority (this node
    /// included) says yes, else how long to wait before asking again.
    async fn ask(&self, others: &[(NodeId, String)]) -> Result<(), Duration> {
        let term = self.raft.metrics().borrow().current_term;
        let last_log_id = self.log.last_log_id();
        let request = PreVoteRequest { term, last_log_id };
        let voters = others.len() + 1;
        let majority = voters / 2 + 1;
        let mut yes = 1;
        let mut retry = self.timing.heartbeat_interval;
        let mut refusals = Vec::new();
        let mut asking: futures_util::stream::FuturesUnordered<_> = others
            .iter()
            .map(|(id, address)| {
                let request = &request;
                async move {
                    let answer = tokio::time::timeout(
                        self.timing.heartbeat_interval * 2,
                        self.network.pre_vote(*id, address, request),
                    )
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".to_string()));
                    (*id, answer)
                }
            })
            .collect();
        use futures_util::StreamExt;
        while let Some((id, answer)) = asking.next().await {
            match answer {
                Ok(answer) if answer.granted => yes += 1,
                Ok(answer) => {
                    if !answer.lease_left.is_zero() {
                        retry = retry.min(answer.lease_left);
                    }
                    refusals.push(format!("node {id}: {}", answer.reason));
                }
                Err(e) => refusals.push(format!("node {id}: {e}")),
            }
            if yes >= majority {
                // A leader may have been heard while asking (a round it
                // sent after a silence): its lease runs again.
                let now = Instant::now();
                if let Some(quiet) = self.contact.quiet_from(self.timing.vote_lease())
                    && quiet > now
                {
                    tracing::debug!("a leader was heard while asking for pre-votes: not standing");
                    return Err(quiet - now);
                }
                tracing::info!(
                    votes = yes,
                    voters,
                    "no leader heard within the lease; a majority would vote for this node: standing"
                );
                return Ok(());
            }
        }
        tracing::debug!(refusals = %refusals.join("; "), "no leader heard, but no majority would vote for this node");
        Err(retry.max(self.timing.heartbeat_interval / 4))
    }

    /// Triggers the election and waits for its outcome (a leader, this
    /// node or another), at most one vote lease; then how long to wait
    /// before looking again.
    async fn stand(&self) -> Duration {
        if let Err(e) = self.raft.trigger().elect().await {
            tracing::warn!(error = %e, "cannot stand for election");
            return self.timing.vote_lease();
        }
        // A leader, this node or another (or, after a split vote, none:
        // the turn spaces the next try from the other candidates').
        let _ = self
            .raft
            .wait(Some(self.timing.vote_lease()))
            .metrics(|m| m.current_leader.is_some(), "an election's outcome")
            .await;
        if self.raft.metrics().borrow().current_leader.is_some() {
            return self.timing.heartbeat_interval / 2;
        }
        // No leader: a split vote. Every candidate backs off a different,
        // random part of a heartbeat before it asks again.
        let mut bytes = [0u8; 4];
        let _ = getrandom::fill(&mut bytes);
        let share = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX);
        tracing::debug!("no leader came of standing (a split vote?): backing off");
        self.timing.heartbeat_interval / 2 + self.timing.heartbeat_interval.mul_f64(share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn followers_take_turns_by_id_and_the_leader_holds_no_place() {
        let timing = RaftTiming {
            heartbeat_interval: ms(20),
            election_timeout: ms(120),
        };
        let voters = [1, 2, 3, 4, 5];
        // Node 1 led and died: node 2 goes first, half a heartbeat in.
        let after_1: Vec<Duration> = [2, 3, 4, 5].map(|me| turn(me, &voters, Some(1), timing)).to_vec();
        assert_eq!(after_1, [ms(10), ms(20), ms(30), ms(40)]);
        // Node 3 led: nodes 1 and 2 keep their places, 4 and 5 move up.
        let after_3: Vec<Duration> = [1, 2, 4, 5].map(|me| turn(me, &voters, Some(3), timing)).to_vec();
        assert_eq!(after_3, [ms(10), ms(20), ms(30), ms(40)]);
        // No leader known (a new cluster): every voter has its place.
        assert_eq!(turn(5, &voters, None, timing), ms(50));
    }

    #[test]
    fn a_node_that_just_started_keeps_quiet_for_a_lease() {
        let contact = LeaderContact::started(ms(300));
        assert!(
            contact.refuse_vote().is_err(),
            "it may have answered a leader before"
        );
        let ends = contact.lease_ends().expect("counted from its start");
        assert!(ends > Instant::now() + ms(200) && ends <= Instant::now() + ms(300));
    }

    #[test]
    fn a_vote_or_a_leader_heard_keeps_a_node_quiet_for_a_lease() {
        let contact = LeaderContact::default();
        assert_eq!(contact.quiet_from(ms(100)), None, "nothing heard yet");
        assert!(contact.refuse_vote().is_ok());
        contact.heard(ms(300));
        let heard_until = contact.quiet_from(ms(100)).expect("heard");
        assert!(
            heard_until > Instant::now() + ms(200),
            "the leader's lease, not ours"
        );
        assert!(contact.refuse_vote().is_err(), "the leader's lease runs");
        contact.voted();
        assert_eq!(
            contact.quiet_from(ms(100)),
            Some(heard_until),
            "the later of the two"
        );
        assert!(contact.quiet_from(ms(1000)).expect("voted") > heard_until);
    }
}
