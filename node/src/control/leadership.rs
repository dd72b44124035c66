//! What this node knows about its standing, refreshed twice every
//! heartbeat interval ([`RaftTiming::confirm_every`]): as leader, the moment
//! just before a quorum last confirmed it (a round of heartbeats answered
//! by a majority, [`Raft::get_read_log_id`], sent once this node's own
//! lease on any earlier leader has run out: see [`crate::vip`]'s lease);
//! as any node, when it last saw a quorum at all (confirmed as leader, or
//! following a leader heard within its lease: a follower that no longer
//! hears its leader, and finds no majority to elect it, keeps the leader's
//! id but has no quorum). The VIP lease is counted from the first; the
//! "no quorum for …" of `raftlb ctl status` from the second.

use super::election::LeaderContact;
use super::types::Raft;
use openraft::ServerState;
use raftlb_config::RaftTiming;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// Leader only: when the last confirmation round was sent. A quorum
    /// answered it, so no other node can win an election for two election
    /// timeouts after this instant.
    pub confirmed_at: Option<Instant>,
    /// The same instant of the last round ever answered, kept after this
    /// node stops leading: while a vote lease from it runs, the VIP may
    /// still be held, and this node must not vote for another.
    pub last_confirmed_at: Option<Instant>,
    /// When this node last saw a quorum (None: not since it started).
    pub quorum_seen_at: Option<Instant>,
}

impl Leadership {
    /// How long this node has been without a quorum, if it is now; a node
    /// that has not heard one for one election timeout beyond a heartbeat
    /// counts as without.
    pub fn without_quorum(&self, timing: RaftTiming, started: Instant) -> Option<Duration> {
        let since = self.quorum_seen_at.unwrap_or(started);
        let silent = since.elapsed();
        (silent > timing.election_timeout + timing.heartbeat_interval).then_some(silent)
    }
}

/// This node's Raft state, the leader it knows and the term, right now.
fn standing(raft: &Raft) -> (ServerState, Option<u64>, u64) {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    (m.state, m.current_leader, m.current_term)
}

/// Starts confirming; the receiver sees every change. While
/// `standing_down` is set (a leadership transfer), the leader stops
/// confirming: its VIP lease runs out and other voters may elect.
pub fn watch(
    raft: Raft,
    timing: RaftTiming,
    standing_down: Arc<AtomicBool>,
    contact: LeaderContact,
) -> (watch::Receiver<Leadership>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Leadership {
        confirmed_at: None,
        last_confirmed_at: None,
        quorum_seen_at: None,
    });
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(timing.confirm_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metrics = raft.metrics();
        let mut was = None;
        loop {
            // Every heartbeat, and at once when this node's role or term
            // changes: a new leader confirms (and claims its VIPs) without
            // waiting for the next tick.
            tokio::select! {
                _ = tick.tick() => {}
                changed = metrics.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = standing(&raft);
                    if Some((now.0, now.2)) == was {
                        continue;
                    }
                }
            }
            let (state, leader, term) = standing(&raft);
            was = Some((state, term));
            if state == ServerState::Leader
                && let Some(end) = contact.lease_ends()
            {
                // A leader's own vote is given unasked, and it may have
                // answered its predecessor's last round just before it
                // stood (or before it restarted): no round counts until
                // its own lease on that predecessor has run out, by when
                // the predecessor's VIP lease has too.
                tokio::time::sleep_until(end.into()).await;
            }
            let now = Instant::now();
            let confirmed = match state {
                ServerState::Leader if !standing_down.load(Ordering::Relaxed) => {
                    let round = raft.get_read_log_id();
                    let answered = matches!(
                        tokio::time::timeout(timing.election_timeout, round).await,
                        Ok(Ok(_))
                    );
                    // A round answered by followers that still followed this
                    // node proves nothing if it has meanwhile stepped down.
                    answered && standing(&raft) == (ServerState::Leader, leader, term)
                }
                _ => false,
            };
            let follows = state != ServerState::Leader && leader.is_some() && !contact.lease_left().is_zero();
            let sees_quorum = confirmed || follows;
            tx.send_modify(|l| {
                l.confirmed_at = confirmed.then_some(now);
                if confirmed {
                    l.last_confirmed_at = Some(now);
                }
                if sees_quorum {
                    l.quorum_seen_at = Some(now);
                }
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    (rx, task)
}
