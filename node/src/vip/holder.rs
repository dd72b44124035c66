//! Carrying out [`lease::decide`] for a set of VIPs, for both owners: it
//! renews and revokes their fence elements, adds and removes their
//! addresses, announces them and lists the held ones for `ctl status`. It
//! decides nothing: each owner says, per VIP, whether this node is entitled
//! and since which confirmation ([`Right`]), and [`Holder::carry_out`]
//! does what [`lease::decide`] says until it says wait.

use super::lease::{self, Facts, Lapse, Step};
use super::{Vip, fence};
use crate::control::gauges::VipCounts;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Rounds of steps in one [`Holder::carry_out`]: release, renew, claim and
/// announce take four; the rest is slack.
const ROUNDS: usize = 8;

/// What entitles this node to one VIP right now (see [`Facts`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Right {
    pub entitled: bool,
    pub confirmed_at: Option<Instant>,
}

/// How an owner's VIPs are named in the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Words {
    /// "VIP", "spread VIP".
    pub vip: &'static str,
    /// Why one is no longer this node's: "stepped down", "not granted".
    pub not_entitled: &'static str,
}

/// One VIP and what this node has done about it.
#[derive(Debug)]
struct Slot {
    vip: Vip,
    /// The confirmation its fence element was last renewed from.
    renewed_from: Option<Instant>,
    held: bool,
    announced_at: Option<Instant>,
}

/// One owner's VIPs.
#[derive(Debug)]
pub(crate) struct Holder {
    slots: Vec<Slot>,
    lease: Duration,
    held_report: watch::Sender<Vec<String>>,
    words: Words,
    counts: Arc<VipCounts>,
}

impl Holder {
    pub(crate) fn new(
        vips: Vec<Vip>,
        lease: Duration,
        held_report: watch::Sender<Vec<String>>,
        words: Words,
        counts: Arc<VipCounts>,
    ) -> Self {
        counts.configure(vips.iter().map(Vip::label));
        let slots = vips
            .into_iter()
            .map(|vip| Slot {
                vip,
                renewed_from: None,
                held: false,
                announced_at: None,
            })
            .collect();
        Holder {
            slots,
            lease,
            held_report,
            words,
            counts,
        }
    }

    pub(crate) fn addresses(&self) -> Vec<IpAddr> {
        self.slots.iter().map(|s| s.vip.spec.address).collect()
    }

    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    pub(crate) fn any_held(&self) -> bool {
        self.slots.iter().any(|s| s.held)
    }

    /// A planned handover begins: the held VIPs take no new TCP
    /// connection for `lasting` (past the lease's end), while requests
    /// under way finish before the lease runs out and the VIPs go.
    pub(crate) fn refuse_new_connections(&self, lasting: Duration) {
        let held: Vec<IpAddr> = self
            .slots
            .iter()
            .filter(|s| s.held)
            .map(|s| s.vip.spec.address)
            .collect();
        if held.is_empty() {
            return;
        }
        match fence::close_to_new_connections(&held, lasting) {
            Ok(()) => tracing::info!(vips = ?held, "handing over: no new connections on the VIPs"),
            Err(e) => tracing::warn!(error = %e, "could not stop new connections before the handover"),
        }
    }

    /// The confirmation the fence was last renewed from, for any VIP.
    pub(crate) fn renewed_from(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.renewed_from).max()
    }

    /// Decides for every VIP and carries the steps out, the most urgent
    /// kind first for all VIPs at once (releases, then one fence renewal,
    /// claims, announcements), deciding again after each, until every VIP
    /// waits; returns the earliest deadline. A VIP whose step failed is
    /// released and left alone until the next call.
    pub(crate) fn carry_out(&mut self, right: impl Fn(IpAddr) -> Right) -> Option<Instant> {
        let mut failed = vec![false; self.slots.len()];
        for _ in 0..ROUNDS {
            let now = Instant::now();
            let steps: Vec<Step> = self
                .slots
                .iter()
                .zip(&failed)
                .map(|(slot, failed)| {
                    if *failed {
                        return Step::Wait { until: None };
                    }
                    lease::decide(now, &self.facts(slot, right(slot.vip.spec.address)))
                })
                .collect();
            let with = |want: fn(&Step) -> bool| -> Vec<usize> {
                (0..steps.len()).filter(|i| want(&steps[*i])).collect()
            };
            let releases: Vec<(usize, String)> = steps
                .iter()
                .enumerate()
                .filter_map(|(i, step)| match step {
                    Step::Release(lapse) => {
                        if *lapse != Lapse::NotEntitled {
                            self.counts.misses.fetch_add(1, Ordering::Relaxed);
                        }
                        Some((i, self.reason(*lapse)))
                    }
                    _ => None,
                })
                .collect();
            if !releases.is_empty() {
                self.release(&releases);
                continue;
            }
            let renewals = with(|s| matches!(s, Step::Renew { .. }));
            if !renewals.is_empty() {
                for i in self.renew(&renewals, &steps) {
                    failed[i] = true;
                }
                continue;
            }
            let claims = with(|s| *s == Step::Claim);
            if !claims.is_empty() {
                for i in self.claim(&claims) {
                    failed[i] = true;
                }
                continue;
            }
            let announcements = with(|s| matches!(s, Step::Announce(_)));
            if !announcements.is_empty() {
                for i in announcements {
                    if let Step::Announce(times) = steps[i] {
                        self.slots[i].vip.announce(times);
                        self.slots[i].announced_at = Some(Instant::now());
                    }
                }
                continue;
            }
            return steps
                .iter()
                .filter_map(|step| match step {
                    Step::Wait { until } => *until,
                    _ => None,
                })
                .min();
        }
        None
    }

    fn facts(&self, slot: &Slot, right: Right) -> Facts {
        Facts {
            entitled: right.entitled,
            confirmed_at: right.confirmed_at,
            lease: self.lease,
            renewed_from: slot.renewed_from,
            held: slot.held,
            announced_at: slot.announced_at,
        }
    }

    fn reason(&self, lapse: Lapse) -> String {
        match lapse {
            Lapse::NotEntitled => self.words.not_entitled.to_string(),
            other => other.to_string(),
        }
    }

    /// Renews the fence of the VIPs `which` (whose steps are renewals) in
    /// one transaction, for the shortest time left of their leases, counted
    /// just before sending (the kernel counts from when it takes the
    /// message); returns those released because it failed or stalled.
    fn renew(&mut self, which: &[usize], steps: &[Step]) -> Vec<usize> {
        let mut ends = Vec::with_capacity(which.len());
        for i in which {
            if let Step::Renew { from, lasting } = steps[*i] {
                // Before sending: from now on the element may exist.
                self.slots[*i].renewed_from = Some(from);
                ends.push((from, lasting));
            }
        }
        let addresses: Vec<IpAddr> = which.iter().map(|i| self.slots[*i].vip.spec.address).collect();
        let decided = Instant::now();
        let lasting = ends
            .iter()
            .map(|(from, lasting)| {
                let left = (*from + self.lease).saturating_duration_since(decided);
                left.min(*lasting)
            })
            .min()
            .unwrap_or_default();
        let renewed = fence::renew(&addresses, lasting);
        let returned = Instant::now();
        let why = match renewed {
            Err(e) => format!("cannot renew the fence: {e}"),
            Ok(()) => {
                let stalled = which.iter().any(|i| {
                    self.slots[*i]
                        .renewed_from
                        .is_some_and(|from| lease::renewal_stalled(from, decided, returned, self.lease))
                });
                if !stalled {
                    self.counts
                        .renewals
                        .fetch_add(which.len() as u64, Ordering::Relaxed);
                    return Vec::new();
                }
                "the fence renewal stalled; lease withdrawn".to_string()
            }
        };
        let releases: Vec<(usize, String)> = which.iter().map(|i| (*i, why.clone())).collect();
        self.counts
            .misses
            .fetch_add(which.len() as u64, Ordering::Relaxed);
        self.release(&releases);
        which.to_vec()
    }

    /// Adds the addresses of the VIPs `which`; returns those released
    /// because that failed.
    fn claim(&mut self, which: &[usize]) -> Vec<usize> {
        let mut failed = Vec::new();
        for i in which {
            let slot = &mut self.slots[*i];
            // Held from before the attempt, so a failure removes it again.
            slot.held = true;
            slot.announced_at = None;
            let vip = &slot.vip;
            if let Err(e) = vip.add() {
                let why = format!("cannot add {} to {}: {e}", vip.spec.address, vip.spec.interface);
                failed.push((*i, why));
                continue;
            }
            let label = vip.label();
            self.held_report.send_modify(|held| held.push(label));
            tracing::info!(vip = %vip.spec.address, lease = ?self.lease, "{} claimed", self.words.vip);
        }
        self.release(&failed);
        failed.into_iter().map(|(i, _)| i).collect()
    }

    /// Withdraws the lease on and removes the VIPs `which`, each for its
    /// reason. The fence goes first: from then on the kernel disowns the
    /// VIPs even if removing them fails.
    fn release(&mut self, which: &[(usize, String)]) {
        let fenced: Vec<IpAddr> = which
            .iter()
            .filter(|(i, _)| self.slots[*i].renewed_from.is_some())
            .map(|(i, _)| self.slots[*i].vip.spec.address)
            .collect();
        if !fenced.is_empty()
            && let Err(e) = fence::revoke(&fenced)
        {
            tracing::warn!(error = %e, "could not revoke a VIP lease (it expires by itself)");
        }
        for (i, reason) in which {
            let slot = &mut self.slots[*i];
            slot.renewed_from = None;
            slot.announced_at = None;
            if !slot.held {
                continue;
            }
            slot.held = false;
            let vip = &slot.vip;
            if let Err(e) = vip.remove() {
                tracing::warn!(vip = %vip.spec.address, error = %e, "could not remove the VIP (fenced anyway)");
            }
            let label = vip.label();
            self.held_report.send_modify(|held| held.retain(|h| *h != label));
            tracing::info!(vip = %vip.spec.address, reason, "{} released", self.words.vip);
        }
    }

    /// Releases every VIP (at shutdown).
    pub(crate) fn release_all(&mut self, reason: &str) {
        let all: Vec<(usize, String)> = (0..self.slots.len()).map(|i| (i, reason.to_string())).collect();
        self.release(&all);
    }
}

/// Waits until `at`, or forever when there is nothing to wait for.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
