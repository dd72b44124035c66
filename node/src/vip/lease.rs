//! The VIP lease decision, for leader-placed and spread VIPs alike: from the
//! clock and what this node knows about one VIP ([`Facts`]), the next thing
//! to do about it ([`Step`]): release it, renew its fence, claim it,
//! announce it, or wait. [`decide`] is pure (no clock, no I/O); the owners
//! gather the facts and [`super::holder`] carries the steps out.
//!
//! # Why two holders never overlap
//!
//! A lease is confirmed at `c`, the instant just *before* a round that was
//! answered: a leader's quorum round (leader-placed), or this node's ask
//! that the leader granted (spread). [`decide`] lets a node hold the VIP
//! (fence element, address, announcements) only while it is entitled (it
//! leads, or the leader's last answer granted it the VIP) and `now < c +
//! lease`; at `c + lease`, or as soon as it is no longer entitled, it says
//! release, and each wait ends by `c + lease` so the loop is there to do it.
//! A renewal grants at most what is left of the lease at the decision, and
//! one acknowledged more than a quarter lease after it is withdrawn
//! ([`renewal_stalled`]): the kernel counts the element's timeout from when
//! it took the message, so its hold ends by `c + 5/4 lease` even if this
//! process dies.
//!
//! - Leader-placed (lease = two thirds of the vote lease `V`, one
//!   election timeout: [`RaftTiming::vip_lease`]): every voter that
//!   answered the round refuses to vote for anyone else for `V` after it
//!   answered, on its own clock. A successor's quorum includes one of
//!   them: either another voter, whose vote it gets only after `c + V`, or
//!   the successor itself, whose own vote is unasked but whose rounds count
//!   as confirmations only once `V` has passed since it last heard a
//!   leader (stamped when the message arrives, before it is answered; a
//!   node that restarted counts its start as such a message, having
//!   forgotten what it answered before). Either way the successor is first
//!   confirmed after `c + V`: after this node's hold, which the kernel ends
//!   by `c + 5/6 V` (it truncates timeouts to its ticks, so never later),
//!   with a sixth to spare for clocks that disagree.
//!
//! [`RaftTiming::vip_lease`]: raftlb_config::RaftTiming::vip_lease
//! - Spread (lease = `E`): the leader grants only while its own
//!   confirmation is under `E` old, and moves a VIP only once its last grant
//!   of it to another node is a lease old (a new leader first waits two
//!   leases); see [`crate::control::spread`].
//!
//! So the predecessor's lease is waited out where the entitlement comes
//! from (Raft's vote lease, the granting leader), and a confirmation can
//! only exist once it has ended; this module's share is to hold nothing
//! outside `[c, c + lease)`. `vip_on_quorum_loss = "hold"`
//! ([`QuorumLossHold`]) trades that guarantee for availability.

use raftlb_config::VipOnQuorumLoss;
use std::time::{Duration, Instant};

/// Announcements sent back to back when a VIP is claimed (one may be lost).
pub(crate) const CLAIM_ANNOUNCEMENTS: usize = 3;
/// How often a held VIP is announced again, for caches that aged out.
pub(crate) const REANNOUNCE_EVERY: Duration = Duration::from_secs(5);

/// What this node knows about one VIP, at the moment of deciding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    /// It may hold the VIP: it leads (leader-placed), or the leader's last
    /// answer granted it the VIP (spread).
    pub entitled: bool,
    /// Just before the round that last confirmed the lease (see the module
    /// doc); `None`: no confirmation counts.
    pub confirmed_at: Option<Instant>,
    /// How long a confirmation lasts.
    pub lease: Duration,
    /// The confirmation the fence element was last renewed from, `None`
    /// once revoked. Set before the renewal is sent: the element may exist.
    pub renewed_from: Option<Instant>,
    /// The address is on its interface.
    pub held: bool,
    /// When the VIP was last announced since it was claimed.
    pub announced_at: Option<Instant>,
}

/// What to do about the VIP now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Revoke the fence element and remove the address.
    Release(Lapse),
    /// Renew the fence element for `lasting`, what is left of the lease
    /// confirmed at `from` (the fence goes first, the address after it).
    Renew { from: Instant, lasting: Duration },
    /// Add the address: the fence lets this node claim it until the lease
    /// ends.
    Claim,
    /// Send this many announcements (gratuitous ARP or unsolicited
    /// neighbour advertisements); they leave past the fence, so only now.
    Announce(usize),
    /// Nothing to do before `until` (which is never after the lease's end),
    /// or, when `None`, before the facts change.
    Wait { until: Option<Instant> },
}

/// Why a VIP is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lapse {
    /// This node stepped down (leader-placed) or the leader did not grant
    /// it the VIP (spread).
    NotEntitled,
    /// No confirmation counts: the last quorum round failed.
    Unconfirmed,
    /// The lease ran out with no confirmation renewing it.
    Expired,
}

impl std::fmt::Display for Lapse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lapse::NotEntitled => "no longer this node's (stepped down, or not granted)",
            Lapse::Unconfirmed => "not confirmed by a quorum",
            Lapse::Expired => "the lease ran out with no confirmation renewing it",
        })
    }
}

/// The next step for one VIP at `now`.
pub(crate) fn decide(now: Instant, facts: &Facts) -> Step {
    let (from, end) = match lease(now, facts) {
        Ok(lease) => lease,
        Err(lapse) if facts.held || facts.renewed_from.is_some() => return Step::Release(lapse),
        Err(_) => return Step::Wait { until: None },
    };
    if facts.renewed_from != Some(from) {
        // Never more than one lease, even from a confirmation that claims
        // to lie ahead of `now`.
        let lasting = end.saturating_duration_since(now).min(facts.lease);
        return Step::Renew { from, lasting };
    }
    if !facts.held {
        return Step::Claim;
    }
    let Some(announced_at) = facts.announced_at else {
        return Step::Announce(CLAIM_ANNOUNCEMENTS);
    };
    match announced_at.checked_add(REANNOUNCE_EVERY) {
        Some(next) if now >= next => Step::Announce(1),
        Some(next) => Step::Wait {
            until: Some(next.min(end)),
        },
        None => Step::Wait { until: Some(end) },
    }
}

/// The running lease: when it was confirmed and when it ends (after
/// `now`), or why there is none.
fn lease(now: Instant, facts: &Facts) -> Result<(Instant, Instant), Lapse> {
    if !facts.entitled {
        return Err(Lapse::NotEntitled);
    }
    let from = facts.confirmed_at.ok_or(Lapse::Unconfirmed)?;
    match from.checked_add(facts.lease) {
        Some(end) if now < end => Ok((from, end)),
        _ => Err(Lapse::Expired),
    }
}

/// Whether a renewal for the lease confirmed at `from`, decided at
/// `decided` (its length counted from then) and acknowledged at
/// `returned`, must be withdrawn: it took more than a quarter lease (the
/// kernel may have granted that much beyond the lease; the other voters
/// wait two), or it came back after the lease's end.
pub(crate) fn renewal_stalled(from: Instant, decided: Instant, returned: Instant, lease: Duration) -> bool {
    returned.saturating_duration_since(decided) > lease / 4
        || returned.saturating_duration_since(from) >= lease
}

/// A leader's standing, for [`QuorumLossHold::confirmation`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Standing {
    /// Raft says this node is leader.
    pub leader: bool,
    pub term: u64,
    /// When a quorum last confirmed it (see [`Facts::confirmed_at`]).
    pub confirmed_at: Option<Instant>,
    /// It is handing leadership over: its lease must run out.
    pub standing_down: bool,
    /// It holds any of its VIPs.
    pub held: bool,
}

/// `[cluster] vip_on_quorum_loss` for leader-placed VIPs, and what "hold"
/// remembers between rounds.
#[derive(Debug)]
pub(crate) struct QuorumLossHold {
    policy: VipOnQuorumLoss,
    /// The term in which a quorum last confirmed this node as leader.
    claimed_in_term: Option<u64>,
    /// Holding without a quorum right now.
    holding: bool,
}

impl QuorumLossHold {
    pub(crate) fn new(policy: VipOnQuorumLoss) -> Self {
        QuorumLossHold {
            policy,
            claimed_in_term: None,
            holding: false,
        }
    }

    /// The confirmation a leader's lease counts from, and whether holding
    /// without a quorum begins with this round (to say so once). With
    /// "hold", a leader whose last confirmation is half a lease old or gone
    /// but that still holds its VIPs and leads in the term a quorum last
    /// confirmed it in (openraft 0.9 leaders do not step down on quorum
    /// loss) counts from `now`, as if confirmed; never while standing down,
    /// and no longer once it sees another leader or a higher term. With
    /// "release", the confirmation as it is.
    pub(crate) fn confirmation(
        &mut self,
        now: Instant,
        lease: Duration,
        s: &Standing,
    ) -> (Option<Instant>, bool) {
        let fresh = s
            .confirmed_at
            .is_some_and(|at| now.saturating_duration_since(at) < lease / 2);
        if s.leader && fresh {
            self.claimed_in_term = Some(s.term);
            self.holding = false;
            return (s.confirmed_at, false);
        }
        let hold = self.policy == VipOnQuorumLoss::Hold
            && s.held
            && s.leader
            && self.claimed_in_term == Some(s.term)
            && !s.standing_down;
        if !hold {
            self.holding = false;
            return (s.confirmed_at, false);
        }
        let began = !self.holding;
        self.holding = true;
        (Some(now), began)
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
