//! Virtual IPs owned by the Raft leader, fenced by a lease.
//!
//! A node holds its VIPs only while it holds a lease: it is leader and a
//! quorum has answered it within the lease. Every heartbeat interval the
//! leader confirms its leadership with a quorum round trip
//! ([`Leadership`]); counted from just *before* that round trip on the
//! monotonic clock, the lease is one election timeout, half of what the
//! voters that answered wait before electing anyone else. `lease` decides
//! from that what to do (and says why no two nodes hold a VIP at once);
//! `holder` renews the kernel fence ([`fence`]) for what is left of the
//! lease, adds, announces and removes the addresses. A killed, frozen or
//! partitioned owner stops renewing, and its kernel stops answering ARP for
//! the VIP and accepting traffic to it when the lease runs out, with no
//! code of ours running.
//!
//! With `[cluster] vip_on_quorum_loss = "hold"` a leader that can no
//! longer confirm a quorum keeps renewing its own fence while it still
//! believes it leads (`lease::QuorumLossHold`): availability over the
//! no-overlap guarantee.
//!
//! IPv4 and IPv6 VIPs are handled alike; they differ only in how the
//! address is added (IPv6: no duplicate address detection), announced
//! (gratuitous ARP or unsolicited neighbour advertisement) and fenced (ARP
//! or neighbour discovery rules).
//!
//! - `lease`: the lease decision, pure, for both kinds of VIP.
//! - `holder`: carrying it out for a set of VIPs.
//! - `spread`: `placement = "spread"` VIPs, one lease per node.
//! - [`netlink`]: the netlink requests both of the following use.
//! - [`address`]: adding and removing the address (rtnetlink).
//! - [`fence`]: the nftables lease sets and their renewal.
//! - [`announce`]: gratuitous ARP and unsolicited neighbour advertisements.

pub mod address;
pub mod announce;
pub mod fence;
mod holder;
mod lease;
pub mod netlink;
mod spread;

use crate::control::ControlPlane;
use crate::control::leadership::Leadership;
use crate::control::types::{Metrics, NodeId};
use holder::{Holder, Right, Words};
use lease::{QuorumLossHold, Standing};
use openraft::ServerState;
use raftlb_config::{Placement, RaftTiming, VipOnQuorumLoss, VipSpec};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("VIP {vip}: interface \"{interface}\": {source}")]
    Interface {
        vip: IpAddr,
        interface: String,
        source: std::io::Error,
    },
    #[error(
        "cannot remove a stale VIP {vip} from \"{interface}\" (raftlb needs CAP_NET_ADMIN to manage VIPs): {source}"
    )]
    Stale {
        vip: IpAddr,
        interface: String,
        source: std::io::Error,
    },
    #[error("cannot install the VIP fence (nftables; raftlb needs CAP_NET_ADMIN): {0}")]
    Fence(std::io::Error),
}

/// One VIP, resolved on this host.
#[derive(Debug, Clone)]
pub(crate) struct Vip {
    spec: VipSpec,
    index: u32,
    mac: [u8; 6],
}

impl Vip {
    /// `address/prefix`, as `ctl status` shows it.
    fn label(&self) -> String {
        format!("{}/{}", self.spec.address, self.spec.prefix_len)
    }

    fn add(&self) -> std::io::Result<()> {
        address::add(self.index, self.spec.address, self.spec.prefix_len)
    }

    fn remove(&self) -> std::io::Result<()> {
        address::remove(self.index, self.spec.address, self.spec.prefix_len)
    }

    /// Sends `times` gratuitous ARPs (IPv4) or unsolicited neighbour
    /// advertisements (IPv6).
    fn announce(&self, times: usize) {
        for _ in 0..times {
            let sent = match self.spec.address {
                IpAddr::V4(v4) => announce::gratuitous_arp(self.index, self.mac, v4),
                IpAddr::V6(v6) => announce::unsolicited_neighbour_advertisement(
                    &self.spec.interface,
                    self.index,
                    self.mac,
                    v6,
                ),
            };
            if let Err(e) = sent {
                tracing::warn!(vip = %self.spec.address, error = %e, "VIP announcement not sent");
            }
        }
    }
}

/// The running VIP manager; [`VipManager::stop`] releases every VIP.
#[derive(Debug)]
pub struct VipManager {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl VipManager {
    /// Resolves the interfaces, removes any VIP address a previous run left
    /// behind, installs the fence holding no lease, then follows leadership.
    pub fn start(
        control: &ControlPlane,
        me: NodeId,
        specs: &[VipSpec],
        timing: RaftTiming,
        on_quorum_loss: VipOnQuorumLoss,
    ) -> Result<VipManager, VipError> {
        let mut vips = Vec::new();
        for spec in specs {
            let interface_error = |source| VipError::Interface {
                vip: spec.address,
                interface: spec.interface.clone(),
                source,
            };
            let index = address::interface_index(&spec.interface).map_err(interface_error)?;
            let mac = announce::mac_address(&spec.interface).map_err(interface_error)?;
            address::remove(index, spec.address, spec.prefix_len).map_err(|source| VipError::Stale {
                vip: spec.address,
                interface: spec.interface.clone(),
                source,
            })?;
            vips.push(Vip {
                spec: spec.clone(),
                index,
                mac,
            });
        }
        let addresses: Vec<IpAddr> = vips.iter().map(|v| v.spec.address).collect();
        fence::install(&addresses).map_err(VipError::Fence)?;
        let stop = CancellationToken::new();
        let (leader_vips, spread_vips): (Vec<Vip>, Vec<Vip>) = vips
            .into_iter()
            .partition(|v| v.spec.placement == Placement::Leader);
        let mut tasks = Vec::new();
        if !leader_vips.is_empty() {
            let handles = control.vip_control();
            let words = Words {
                vip: "VIP",
                not_entitled: "stepped down",
            };
            let owner = Owner {
                raft: handles.metrics,
                leadership: handles.leadership,
                standing_down: handles.standing_down,
                quorum_loss: QuorumLossHold::new(on_quorum_loss),
                holder: Holder::new(
                    leader_vips,
                    leader_lease(timing),
                    handles.held_report,
                    words,
                    handles.counts,
                ),
            };
            tasks.push(tokio::spawn(owner.run(timing.heartbeat_interval, stop.clone())));
        }
        if !spread_vips.is_empty() {
            let owner = spread::SpreadOwner::new(control, me, spread_vips, timing);
            tasks.push(tokio::spawn(owner.run(stop.clone())));
        }
        Ok(VipManager { stop, tasks })
    }

    /// Releases every VIP and removes the fence.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        if let Err(e) = fence::remove() {
            tracing::warn!(error = %e, "could not remove the VIP fence tables");
        }
    }
}

/// The lease a leader holds its VIPs for, from before each confirmation:
/// [`RaftTiming::vip_lease`]. (Failpoint `vip-skip-lease-wait`: many more,
/// so a successor claims before it ends.)
fn leader_lease(timing: RaftTiming) -> Duration {
    #[cfg(feature = "failpoints")]
    if crate::failpoint::active(crate::failpoint::Failpoint::VipSkipLeaseWait) {
        return timing.election_timeout * crate::failpoint::STRETCHED_LEASE;
    }
    timing.vip_lease()
}

/// The leader's lease loop: gathers the facts (Raft state, the last
/// quorum confirmation, `vip_on_quorum_loss`) and hands them to the holder.
struct Owner {
    /// This node's Raft state, leader and term.
    raft: watch::Receiver<Metrics>,
    leadership: watch::Receiver<Leadership>,
    /// Set while this node hands leadership over: then its lease must run
    /// out, hold or not.
    standing_down: Arc<AtomicBool>,
    quorum_loss: QuorumLossHold,
    holder: Holder,
}

impl Owner {
    async fn run(mut self, every: Duration, stop: CancellationToken) {
        let mut until = None;
        let mut closing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = self.leadership.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(every) => {}
                () = holder::sleep_until(until) => {}
            }
            let standing_down = self.standing_down.load(Ordering::Relaxed);
            if standing_down && !closing {
                self.holder.refuse_new_connections(self.holder.lease() * 2);
            }
            closing = standing_down;
            let (leader, confirmed_at) = self.standing();
            until = self.holder.carry_out(|_| Right {
                entitled: leader,
                confirmed_at,
            });
        }
        self.holder.release_all("shutting down");
    }

    /// Whether this node leads, and the confirmation its lease counts from.
    fn standing(&mut self) -> (bool, Option<Instant>) {
        let confirmed_at = self.leadership.borrow_and_update().confirmed_at;
        // A leader handing over sends no more rounds; the lease it holds
        // runs to its end, as between two rounds, so the requests already
        // on the VIP get that long to finish (new connections are refused
        // meanwhile), rather than losing the VIP at once as after a round
        // that failed. Once it no longer leads, the VIP goes at once.
        let standing_down = self.standing_down.load(Ordering::Relaxed);
        let confirmed_at = match standing_down {
            true => confirmed_at.or(self.holder.renewed_from()),
            false => confirmed_at,
        };
        // Failpoint `vip-skip-lease-wait`: a failed round does not end
        // the lease; it runs from the last renewal to its (stretched) end.
        #[cfg(feature = "failpoints")]
        let confirmed_at = confirmed_at.or(self
            .holder
            .renewed_from()
            .filter(|_| crate::failpoint::active(crate::failpoint::Failpoint::VipSkipLeaseWait)));
        let standing = {
            let m = self.raft.borrow();
            Standing {
                leader: m.state == ServerState::Leader,
                term: m.current_term,
                confirmed_at,
                standing_down,
                held: self.holder.any_held(),
            }
        };
        let (confirmed_at, began_holding) =
            self.quorum_loss
                .confirmation(Instant::now(), self.holder.lease(), &standing);
        if began_holding {
            tracing::warn!(
                term = standing.term,
                "no quorum confirms this leader; holding the VIPs anyway (vip_on_quorum_loss = \"hold\")"
            );
        }
        (standing.leader, confirmed_at)
    }
}
