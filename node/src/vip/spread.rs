//! `placement = "spread"` VIPs on one node: each heartbeat it asks the
//! leader for the lease on them (the leader grants the ones its replicated
//! state assigns to this node, see [`crate::control::spread`]) and holds
//! exactly those, fenced like the leader's VIPs for one election timeout
//! counted from before it asked ([`super::lease`] decides, [`Holder`]
//! acts). While this node leads, it also assigns unowned VIPs, and those
//! of nodes that stopped asking, to live nodes.

use super::Vip;
use super::holder::{self, Holder, Right, Words};
use crate::control::ControlPlane;
use crate::control::leadership::Leadership;
use crate::control::spread::{self, LeaseDesk};
use crate::control::state_machine::Applied;
use crate::control::types::NodeId;
use raftlb_config::RaftTiming;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The leader's last answer to this node's ask.
#[derive(Debug)]
struct Grant {
    /// Just before the ask: the lease counts from here.
    asked: Instant,
    vips: Vec<IpAddr>,
}

pub(crate) struct SpreadOwner {
    me: NodeId,
    /// Asks for this node's leases; as leader, grants and assigns.
    desk: LeaseDesk,
    applied: watch::Receiver<Arc<Applied>>,
    leadership: watch::Receiver<Leadership>,
    timing: RaftTiming,
    holder: Holder,
    /// The last grant. A failed ask keeps it: the VIPs held stay until its
    /// lease ends, as a leader keeps its VIPs from its last confirmation.
    grant: Option<Grant>,
    /// Since when this node leads (confirmed), if it does.
    leading_since: Option<Instant>,
}

impl SpreadOwner {
    pub(crate) fn new(control: &ControlPlane, me: NodeId, vips: Vec<Vip>, timing: RaftTiming) -> Self {
        let handles = control.vip_control();
        let words = Words {
            vip: "spread VIP",
            not_entitled: "not granted",
        };
        SpreadOwner {
            me,
            desk: handles.leases,
            applied: control.applied(),
            leadership: handles.leadership,
            timing,
            holder: Holder::new(
                vips,
                timing.election_timeout,
                handles.held_report,
                words,
                handles.counts,
            ),
            grant: None,
            leading_since: None,
        }
    }

    fn lease(&self) -> Duration {
        self.timing.election_timeout
    }

    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.timing.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut until = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    self.assign_if_leading().await;
                    self.ask().await;
                }
                () = holder::sleep_until(until) => {}
            }
            let grant = self.grant.as_ref();
            until = self.holder.carry_out(|vip| Right {
                entitled: grant.is_some_and(|g| g.vips.contains(&vip)),
                confirmed_at: grant.map(|g| g.asked),
            });
        }
        self.holder.release_all("shutting down");
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
        let addresses = self.holder.addresses();
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

    /// Asks the leader for the lease on this node's VIPs; an answer
    /// replaces the last grant. A failed ask (no leader, a leader not
    /// confirmed just now, a slow answer) changes nothing: the VIPs held
    /// stay until their lease ends, unless a grant renews it first, so one
    /// missed round does not make them flap.
    async fn ask(&mut self) {
        let addresses = self.holder.addresses();
        let asked = Instant::now();
        // An answer after the lease held ends cannot be used for it, and
        // the VIPs must be released then.
        let held_until = self
            .grant
            .as_ref()
            .filter(|_| self.holder.any_held())
            .map(|g| g.asked + self.lease());
        let answer_by = held_until.map_or(asked + self.lease(), |ends| ends.min(asked + self.lease()));
        let asking = self.desk.ask(&addresses);
        match tokio::time::timeout_at(answer_by.into(), asking).await {
            Ok(Ok(vips)) => self.grant = Some(Grant { asked, vips }),
            Ok(Err(status)) => tracing::debug!(
                node = self.me,
                reason = status.message(),
                "spread VIP lease not renewed this round"
            ),
            Err(_) => tracing::debug!(
                node = self.me,
                "the leader did not answer the spread VIP lease ask in time"
            ),
        }
    }
}
