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
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1000);
    const TICK: Duration = Duration::from_millis(100);
    const NS: Duration = Duration::from_nanos(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An entitled node confirmed at `c` (if any), nothing renewed or held.
    fn confirmed(c: Option<Instant>) -> Facts {
        Facts {
            entitled: true,
            confirmed_at: c,
            lease: LEASE,
            renewed_from: None,
            held: false,
            announced_at: None,
        }
    }

    /// Confirmed at `c`, and holding from then on.
    fn holding(c: Instant) -> Facts {
        let mut f = confirmed(Some(c));
        settle(c, &mut f);
        f
    }

    fn renew(from: Instant, lasting: Duration) -> Step {
        Step::Renew { from, lasting }
    }

    fn wait(until: Instant) -> Step {
        Step::Wait { until: Some(until) }
    }

    /// Carries `step` out as the holder does when nothing fails.
    fn apply(now: Instant, step: Step, f: &mut Facts) {
        match step {
            Step::Release(_) => (f.renewed_from, f.held, f.announced_at) = (None, false, None),
            Step::Renew { from, .. } => f.renewed_from = Some(from),
            Step::Claim => f.held = true,
            Step::Announce(_) => f.announced_at = Some(now),
            Step::Wait { .. } => {}
        }
    }

    /// Decides and carries out until told to wait: every step, the wait last.
    fn settle(now: Instant, f: &mut Facts) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..8 {
            let step = decide(now, f);
            steps.push(step);
            if let Step::Wait { .. } = step {
                return steps;
            }
            apply(now, step, f);
        }
        panic!("no wait after {steps:?}");
    }

    #[test]
    fn claims_only_with_a_fresh_confirmation() {
        let c = Instant::now();
        let nothing = vec![Step::Wait { until: None }];
        assert_eq!(settle(c, &mut confirmed(None)), nothing, "no confirmation");
        assert_eq!(
            settle(c + LEASE, &mut confirmed(Some(c))),
            nothing,
            "one lease old"
        );
        let mut other = confirmed(Some(c));
        other.entitled = false;
        assert_eq!(settle(c, &mut other), nothing, "not entitled");
        let steps = settle(c + ms(10), &mut confirmed(Some(c)));
        let claim = [renew(c, ms(990)), Step::Claim, Step::Announce(3), wait(c + LEASE)];
        assert_eq!(steps, claim, "fence first, then the address, then announcements");
    }

    #[test]
    fn a_renewal_grants_what_is_left_and_never_more_than_a_lease() {
        let c = Instant::now();
        let last = decide(c + LEASE - NS, &confirmed(Some(c)));
        assert_eq!(last, renew(c, NS));
        let ahead = decide(c, &confirmed(Some(c + LEASE)));
        assert_eq!(ahead, renew(c + LEASE, LEASE));
    }

    #[test]
    fn renews_while_confirmations_keep_coming_and_reannounces_each_period() {
        let start = Instant::now();
        let mut f = confirmed(None);
        let mut taken = Vec::new();
        for k in 0..60 {
            let now = start + TICK * k;
            f.confirmed_at = Some(now - ms(5).min(now - start));
            taken.extend(settle(now, &mut f));
            assert!(f.held, "tick {k}: held");
        }
        let count = |want: fn(&Step) -> bool| taken.iter().filter(|s| want(s)).count();
        assert_eq!(count(|s| matches!(s, Step::Release(_))), 0);
        assert_eq!(
            count(|s| matches!(s, Step::Renew { .. })),
            60,
            "one per confirmation"
        );
        assert_eq!(count(|s| *s == Step::Claim), 1);
        assert_eq!(count(|s| *s == Step::Announce(CLAIM_ANNOUNCEMENTS)), 1);
        assert_eq!(count(|s| *s == Step::Announce(1)), 1, "at 5 s, within 5.9 s");
        assert_eq!(f.announced_at, Some(start + REANNOUNCE_EVERY));
    }

    #[test]
    fn releases_at_the_exact_instant_the_lease_lapses() {
        let c = Instant::now();
        let mut f = holding(c);
        assert!(f.held);
        let end = c + LEASE;
        assert_eq!(decide(end - NS, &f), wait(end), "one tick before: hold");
        assert_eq!(
            decide(end, &f),
            Step::Release(Lapse::Expired),
            "at the end: release"
        );
        assert_eq!(
            decide(end + LEASE, &f),
            Step::Release(Lapse::Expired),
            "after: release"
        );
        assert_eq!(settle(end, &mut f).last(), Some(&Step::Wait { until: None }));
        assert!(!f.held && f.renewed_from.is_none(), "released and revoked");
    }

    #[test]
    fn releases_at_once_on_step_down_reassignment_or_a_failed_round() {
        let c = Instant::now();
        let now = c + ms(1);
        let mut stepped_down = holding(c);
        stepped_down.entitled = false;
        assert_eq!(decide(now, &stepped_down), Step::Release(Lapse::NotEntitled));
        let mut failed_round = holding(c);
        failed_round.confirmed_at = None;
        assert_eq!(decide(now, &failed_round), Step::Release(Lapse::Unconfirmed));
        let mut fenced_only = stepped_down;
        fenced_only.held = false;
        let revoke = decide(now, &fenced_only);
        assert_eq!(
            revoke,
            Step::Release(Lapse::NotEntitled),
            "a fence element alone too"
        );
    }

    #[test]
    fn announces_on_claim_then_each_period_but_never_waits_past_the_lease() {
        let c = Instant::now();
        let mut f = holding(c);
        f.announced_at = None;
        assert_eq!(decide(c, &f), Step::Announce(CLAIM_ANNOUNCEMENTS), "on claim");
        f.announced_at = Some(c);
        assert_eq!(decide(c, &f), wait(c + LEASE), "the lease ends first");
        f.lease = REANNOUNCE_EVERY * 2;
        let next = c + REANNOUNCE_EVERY;
        assert_eq!(decide(next - NS, &f), wait(next));
        assert_eq!(decide(next, &f), Step::Announce(1), "at the period");
    }

    #[test]
    fn a_renewal_that_stalled_is_withdrawn() {
        let c = Instant::now();
        let decided = c + ms(1);
        assert!(!renewal_stalled(c, decided, decided + LEASE / 4, LEASE));
        assert!(
            renewal_stalled(c, decided, decided + LEASE / 4 + NS, LEASE),
            "a quarter lease late"
        );
        assert!(
            renewal_stalled(c, c + LEASE - NS, c + LEASE, LEASE),
            "back after the end"
        );
    }

    #[test]
    fn spread_a_missed_answer_keeps_the_vip_until_its_grant_runs_out() {
        let asked = Instant::now();
        let f = holding(asked);
        // Asks that fail leave the facts as they were: nothing to do.
        for k in 1..10 {
            assert_eq!(decide(asked + TICK * k, &f), wait(asked + LEASE));
        }
        assert_eq!(decide(asked + LEASE, &f), Step::Release(Lapse::Expired));
    }

    #[test]
    fn spread_an_answer_that_moves_one_vip_releases_it_and_renews_the_other() {
        let first = Instant::now();
        let (mut kept, mut moved) = (holding(first), holding(first));
        let second = first + TICK;
        kept.confirmed_at = Some(second);
        (moved.entitled, moved.confirmed_at) = (false, Some(second));
        let now = second + ms(1);
        assert_eq!(decide(now, &moved), Step::Release(Lapse::NotEntitled));
        let next = renew(second, LEASE - ms(1));
        assert_eq!(decide(now, &kept), next);
    }

    #[test]
    fn a_successor_confirmed_after_the_lease_never_overlaps_the_predecessor() {
        // The predecessor, cut off, still believes it leads; its last
        // confirmation was at `c`. The successor is confirmed from `first`
        // on, every tick. Raft puts `first` at `c + 2 lease` or later.
        let overlap = |first: Instant, c: Instant| {
            let (mut old, mut new) = (confirmed(Some(c)), confirmed(None));
            let mut now = c;
            while now < first + LEASE * 3 {
                if now >= first {
                    let ticks = u32::try_from((now - first).as_millis() / 100).unwrap();
                    new.confirmed_at = Some(first + TICK * ticks);
                }
                settle(now, &mut old);
                settle(now, &mut new);
                if old.held && new.held {
                    return Some(now - c);
                }
                now += ms(1);
            }
            None
        };
        let c = Instant::now();
        assert_eq!(overlap(c + LEASE * 2, c), None, "Raft's bound");
        assert_eq!(overlap(c + LEASE, c), None, "the lease's own end");
        let early = overlap(c + LEASE - ms(1), c);
        assert_eq!(early, Some(LEASE - ms(1)), "confirmed inside the lease: overlap");
    }

    /// One input change between decisions.
    #[derive(Debug, Clone, Copy)]
    enum Event {
        Advance(Duration),
        /// A round answered, sent `.0` before now.
        Confirm(Duration),
        ConfirmAhead,
        Unconfirm,
        StepDown,
        StepUp,
    }

    const EVENTS: [Event; 10] = [
        Event::Advance(NS),
        Event::Advance(TICK),
        Event::Advance(Duration::from_millis(500)),
        Event::Advance(Duration::from_millis(1000)),
        Event::Confirm(Duration::ZERO),
        Event::Confirm(Duration::from_millis(900)),
        Event::ConfirmAhead,
        Event::Unconfirm,
        Event::StepDown,
        Event::StepUp,
    ];

    /// Settles at `now` like a loop does, checking each step against the
    /// confirmation the facts carry; returns the wait's deadline.
    fn settle_checked(now: Instant, f: &mut Facts) -> Option<Instant> {
        for step in settle(now, f) {
            let end = f.confirmed_at.map(|c| c + LEASE);
            let running = f.entitled && end.is_some_and(|end| now < end);
            match step {
                Step::Renew { from, lasting } => {
                    assert!(running && f.confirmed_at == Some(from), "{step:?} at {f:?}");
                    assert!(
                        lasting <= LEASE && Some(now + lasting) <= end,
                        "{step:?} past the end"
                    );
                }
                Step::Claim | Step::Announce(_) => assert!(running, "{step:?} outside the lease: {f:?}"),
                Step::Release(_) => {}
                Step::Wait { until } => {
                    assert!(until.is_none_or(|until| until > now), "a wait already over");
                    if f.held || f.renewed_from.is_some() {
                        let renewed = f.renewed_from == f.confirmed_at;
                        assert!(running && renewed, "holding after the lapse: {f:?}");
                        assert!(until.is_some() && until <= end, "waiting past the lease's end");
                    }
                    return until;
                }
            }
        }
        None
    }

    #[test]
    fn no_sequence_of_inputs_holds_after_the_lease_lapsed() {
        let base = Instant::now() + LEASE * 2;
        let length = 5;
        let mut sequences = 0;
        for mut code in 0..EVENTS.len().pow(length) {
            let (mut now, mut f) = (base, confirmed(None));
            let mut until = settle_checked(now, &mut f);
            for _ in 0..length {
                match EVENTS[code % EVENTS.len()] {
                    Event::Advance(by) => {
                        // The loop wakes at each deadline on the way.
                        let to = now + by;
                        while let Some(at) = until.filter(|at| *at <= to) {
                            now = at;
                            until = settle_checked(now, &mut f);
                        }
                        now = to;
                    }
                    Event::Confirm(ago) => f.confirmed_at = Some(now - ago),
                    Event::ConfirmAhead => f.confirmed_at = Some(now + TICK),
                    Event::Unconfirm => f.confirmed_at = None,
                    Event::StepDown => f.entitled = false,
                    Event::StepUp => f.entitled = true,
                }
                code /= EVENTS.len();
                until = settle_checked(now, &mut f);
            }
            sequences += 1;
        }
        assert_eq!(sequences, 100_000);
    }

    #[test]
    fn hold_counts_from_now_only_in_the_confirmed_term_and_never_while_standing_down() {
        let t = Instant::now();
        let later = t + LEASE / 2;
        let confirmed = Standing {
            leader: true,
            term: 3,
            confirmed_at: Some(t),
            standing_down: false,
            held: true,
        };
        let lost = Standing {
            confirmed_at: None,
            ..confirmed
        };
        let mut release = QuorumLossHold::new(VipOnQuorumLoss::Release);
        assert_eq!(release.confirmation(t, LEASE, &confirmed), (Some(t), false));
        assert_eq!(release.confirmation(later, LEASE, &confirmed), (Some(t), false));
        assert_eq!(release.confirmation(t + TICK, LEASE, &lost), (None, false));

        let mut hold = QuorumLossHold::new(VipOnQuorumLoss::Hold);
        let but = |change: fn(&mut Standing)| {
            let mut s = lost;
            change(&mut s);
            s
        };
        let steps = [
            (t + TICK, lost, (None, false), "not confirmed in this term yet"),
            (t + TICK, confirmed, (Some(t), false), "fresh"),
            (
                later,
                confirmed,
                (Some(later), true),
                "half a lease old: now, said",
            ),
            (later + TICK, lost, (Some(later + TICK), false), "no quorum: now"),
            (
                later,
                but(|s| s.standing_down = true),
                (None, false),
                "standing down",
            ),
            (later, but(|s| s.term = 4), (None, false), "a later term"),
            (later, but(|s| s.leader = false), (None, false), "stepped down"),
            (later, but(|s| s.held = false), (None, false), "nothing held"),
            (later, lost, (Some(later), true), "holding again, said again"),
        ];
        for (now, standing, want, what) in steps {
            assert_eq!(hold.confirmation(now, LEASE, &standing), want, "{what}");
        }
    }
}
