//! Tests of [`super`]: the lease decision at instants the tests choose.

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
