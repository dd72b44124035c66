//! `placement = "spread"` VIPs on one node: each heartbeat it asks the
//! leader for the lease on them (the leader grants the ones its replicated
//! state assigns to this node, see [`crate::control::spread`]) and holds
//! exactly those, fenced like the leader's VIPs for one election timeout
//! counted from before it asked. While this node leads, it also assigns
//! unowned VIPs, and those of nodes that stopped asking, to live nodes.

use super::{Vip, fence};
use crate::control::ControlPlane;
use crate::control::leadership::Leadership;
use crate::control::spread::{self, LeaseDesk};
use crate::control::state_machine::Applied;
use crate::control::types::NodeId;
use raftlb_config::RaftTiming;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Gratuitous ARPs sent back to back when a VIP is claimed.
const CLAIM_ANNOUNCEMENTS: usize = 3;

pub(crate) struct SpreadOwner {
    me: NodeId,
    /// Asks for this node's leases; as leader, grants and assigns.
    desk: LeaseDesk,
    applied: watch::Receiver<Arc<Applied>>,
    leadership: watch::Receiver<Leadership>,
    held_report: watch::Sender<Vec<String>>,
    vips: Vec<Vip>,
    timing: RaftTiming,
    /// The VIPs whose address is on the interface.
    held: HashSet<IpAddr>,
    /// When the last grant's lease ends (counted from before that ask): a
    /// failed ask keeps the held VIPs until then, as a leader keeps its
    /// VIPs from its last confirmation.
    lease_ends: Option<Instant>,
    /// Since when this node leads (confirmed), if it does.
    leading_since: Option<Instant>,
}

impl SpreadOwner {
    pub(crate) fn new(control: &ControlPlane, me: NodeId, vips: Vec<Vip>, timing: RaftTiming) -> Self {
        let handles = control.vip_control();
        SpreadOwner {
            me,
            desk: handles.leases,
            applied: control.applied(),
            leadership: handles.leadership,
            held_report: handles.held_report,
            vips,
            timing,
            held: HashSet::new(),
            lease_ends: None,
            leading_since: None,
        }
    }

    fn lease(&self) -> Duration {
        self.timing.election_timeout
    }

    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.timing.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let lease_ends = self.lease_ends.filter(|_| !self.held.is_empty());
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
                () = sleep_until(lease_ends) => {
                    let held: Vec<IpAddr> = self.held.iter().copied().collect();
                    self.release(&held, "the lease ran out with no grant renewing it");
                    continue;
                }
            }
            self.assign_if_leading().await;
            self.hold_what_is_granted().await;
        }
        let all: Vec<IpAddr> = self.held.iter().copied().collect();
        self.release(&all, "shutting down");
    }

    /// As a confirmed leader: give every unowned VIP, and every VIP of a
    /// node that stopped asking, to a live node, once no other node's grant
    /// on it can still be running.
    async fn assign_if_leading(&mut self) {
        let confirmed = self.leadership.borrow().confirmed_at;
        if confirmed.is_none_or(|at| at.elapsed() >= self.lease()) {
            self.leading_since = None;
            return;
        }
        // A new leader first hears who is alive (everyone asks every
        // heartbeat) rather than take VIPs from nodes it has not heard yet.
        let since = *self.leading_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.lease() * 2 {
            return;
        }
        let addresses: Vec<IpAddr> = self.vips.iter().map(|v| v.spec.address).collect();
        let owners = self.applied.borrow().state.vip_owners().clone();
        let changes = {
            let leases = self.desk.leases();
            let live = leases.live(self.lease() * 2);
            spread::plan(&addresses, &owners, &live)
                .into_iter()
                .filter(|(vip, node)| node.is_none_or(|node| leases.may_assign(*vip, node, self.lease())))
                .collect::<Vec<_>>()
        };
        for (address, owner) in changes {
            match self.desk.assign(address, owner).await {
                Ok(()) => tracing::info!(vip = %address, ?owner, "spread VIP assigned"),
                Err(e) => tracing::warn!(vip = %address, error = %e, "spread VIP not assigned"),
            }
        }
    }

    /// Asks the leader for the lease on this node's VIPs and holds exactly
    /// the granted ones for what is left of the lease. A failed ask (no
    /// leader, a leader not confirmed just now, a slow answer) changes
    /// nothing: the VIPs held stay until their lease ends, unless a grant
    /// renews it first, so one missed round does not make them flap.
    async fn hold_what_is_granted(&mut self) {
        let addresses: Vec<IpAddr> = self.vips.iter().map(|v| v.spec.address).collect();
        let asked = Instant::now();
        // An answer after the lease held ends cannot be used for it.
        let answer_by = match self.lease_ends.filter(|_| !self.held.is_empty()) {
            Some(ends) => ends.min(asked + self.lease()),
            None => asked + self.lease(),
        };
        let asking = self.desk.ask(&addresses);
        let granted = match tokio::time::timeout_at(answer_by.into(), asking).await {
            Ok(Ok(granted)) => granted,
            Ok(Err(status)) => {
                tracing::debug!(
                    reason = status.message(),
                    "spread VIP lease not renewed this round"
                );
                return;
            }
            Err(_) => {
                tracing::debug!("the leader did not answer the spread VIP lease ask in time");
                return;
            }
        };
        let lost: Vec<IpAddr> = self
            .held
            .iter()
            .filter(|v| !granted.contains(v))
            .copied()
            .collect();
        self.release(&lost, "not granted");
        let remaining = self.lease().saturating_sub(asked.elapsed());
        if granted.is_empty() || remaining.is_zero() {
            return;
        }
        let sent = Instant::now();
        if let Err(e) = fence::renew(&granted, remaining) {
            self.release(&granted, &format!("cannot renew the fence: {e}"));
            return;
        }
        self.lease_ends = Some(asked + self.lease());
        // As for the leader's VIPs: a stalled renewal is withdrawn.
        if sent.elapsed() > self.lease() / 4 || asked.elapsed() >= self.lease() {
            self.release(&granted, "the fence renewal stalled");
            return;
        }
        for vip in self.vips.iter().filter(|v| granted.contains(&v.spec.address)) {
            if self.held.contains(&vip.spec.address) {
                continue;
            }
            self.held.insert(vip.spec.address);
            if let Err(e) = vip.add() {
                tracing::warn!(vip = %vip.spec.address, error = %e, "cannot add the spread VIP");
                continue;
            }
            let label = vip.label();
            self.held_report.send_modify(|held| held.push(label));
            tracing::info!(vip = %vip.spec.address, node = self.me, "spread VIP claimed");
            if asked.elapsed() < self.lease() {
                vip.announce(CLAIM_ANNOUNCEMENTS);
            }
        }
    }

    /// Revokes the fence on `vips` and removes those held.
    fn release(&mut self, vips: &[IpAddr], reason: &str) {
        if vips.is_empty() {
            return;
        }
        if let Err(e) = fence::revoke(vips) {
            tracing::warn!(error = %e, "could not revoke a spread VIP lease (it expires by itself)");
        }
        for vip in self.vips.iter().filter(|v| vips.contains(&v.spec.address)) {
            if !self.held.remove(&vip.spec.address) {
                continue;
            }
            if let Err(e) = vip.remove() {
                tracing::warn!(vip = %vip.spec.address, error = %e, "could not remove the spread VIP (fenced anyway)");
            }
            let label = vip.label();
            self.held_report.send_modify(|held| held.retain(|h| *h != label));
            tracing::info!(vip = %vip.spec.address, reason, "spread VIP released");
        }
    }
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
