//! Virtual IPs owned by the Raft leader, fenced by a lease.
//!
//! A node holds its VIPs only while it holds a lease: it is leader and a
//! quorum has answered it within the lease. Every heartbeat interval the
//! leader confirms its leadership with a quorum round trip
//! ([`Leadership`]) and, measured from just *before* that round trip on the
//! monotonic clock, renews the kernel fence ([`fence`]) for what is left of
//! the lease. The lease is one election timeout, half of openraft's
//! leader lease: a follower that answered the round trip refuses to vote for
//! anyone else for two election timeouts after it answered, so no other node
//! can become leader, and claim, before this node's fence has expired. A
//! killed, frozen or partitioned owner stops renewing, and its kernel stops
//! answering ARP for the VIP and accepting traffic to it when the lease runs
//! out, with no code of ours running.
//!
//! With `[cluster] vip_on_quorum_loss = "hold"` a leader that can no
//! longer confirm a quorum keeps renewing its own fence while it still
//! believes it leads ([`Owner::hold_without_quorum`]): availability over
//! the no-overlap guarantee above.
//!
//! IPv4 and IPv6 VIPs are handled alike; they differ only in how the
//! address is added (IPv6: no duplicate address detection), announced
//! (gratuitous ARP or unsolicited neighbour advertisement) and fenced (ARP
//! or neighbour discovery rules).
//!
//! - [`netlink`]: the netlink requests both of the following use.
//! - [`address`]: adding and removing the address (rtnetlink).
//! - [`fence`]: the nftables lease sets and their renewal.
//! - [`announce`]: gratuitous ARP and unsolicited neighbour advertisements.

pub mod address;
pub mod announce;
pub mod fence;
pub mod netlink;
mod spread;

use crate::control::ControlPlane;
use crate::control::leadership::Leadership;
use crate::control::types::{Metrics, NodeId};
use openraft::ServerState;
use raftlb_config::{Placement, RaftTiming, VipOnQuorumLoss, VipSpec};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Announcements sent back to back when a VIP is claimed (one may be lost).
const CLAIM_ANNOUNCEMENTS: usize = 3;
/// How often a held VIP is announced again, for caches that aged out.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(5);

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
            let owner = Owner {
                raft: handles.metrics,
                leadership: handles.leadership,
                held_report: handles.held_report,
                renewed_for: None,
                addresses: leader_vips.iter().map(|v| v.spec.address).collect(),
                vips: leader_vips,
                lease: leader_lease(timing),
                on_quorum_loss,
                claimed_in_term: None,
                standing_down: handles.standing_down,
                holding: false,
                fenced: false,
                held: false,
                next_announcement: Instant::now(),
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
/// one election timeout, half the other voters' vote lease. (Failpoint
/// `vip-skip-lease-wait`: many more, so a successor claims before it ends.)
fn leader_lease(timing: RaftTiming) -> Duration {
    #[cfg(feature = "failpoints")]
    if crate::failpoint::active(crate::failpoint::Failpoint::VipSkipLeaseWait) {
        return timing.election_timeout * crate::failpoint::STRETCHED_LEASE;
    }
    timing.election_timeout
}

/// The lease loop's state.
struct Owner {
    /// This node's Raft state, leader and term.
    raft: watch::Receiver<Metrics>,
    leadership: watch::Receiver<Leadership>,
    /// Where the VIPs held are reported (`ctl status`).
    held_report: watch::Sender<Vec<String>>,
    /// The confirmation the fence was last renewed from.
    renewed_for: Option<Instant>,
    vips: Vec<Vip>,
    addresses: Vec<IpAddr>,
    lease: Duration,
    on_quorum_loss: VipOnQuorumLoss,
    /// The term in which a quorum last confirmed this node while it held
    /// the VIPs: what `hold` keeps holding.
    claimed_in_term: Option<u64>,
    /// Set while this node hands leadership over: then its lease must run
    /// out, hold or not.
    standing_down: Arc<AtomicBool>,
    /// Holding without a quorum right now (logged once per episode).
    holding: bool,
    /// The fence may hold a lease element (renewed and not yet revoked).
    fenced: bool,
    /// The addresses are on their interfaces.
    held: bool,
    next_announcement: Instant,
}

impl Owner {
    async fn run(mut self, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = self.leadership.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(every) => {}
            }
            let confirmed = self.leadership.borrow_and_update().confirmed_at;
            // Failpoint `vip-skip-lease-wait`: a failed round does not end
            // the lease; it runs from the last renewal to its (stretched) end.
            #[cfg(feature = "failpoints")]
            let confirmed = confirmed.or(self
                .renewed_for
                .filter(|_| crate::failpoint::active(crate::failpoint::Failpoint::VipSkipLeaseWait)));
            let confirmed = self.hold_without_quorum(confirmed);
            match self.renew(confirmed) {
                Ok(asked) => self.claim_or_announce(asked),
                Err(reason) => self.release(&reason),
            }
        }
        self.release("shutting down");
    }

    /// `vip_on_quorum_loss = "hold"`: when the last confirmation is half a
    /// lease old or gone, yet this node still holds the VIPs and is leader
    /// in the term a quorum last confirmed it in (openraft 0.9 leaders do
    /// not step down on quorum loss), counts the lease from now, as if
    /// confirmed. That ends when this node sees another leader or a higher
    /// term: it is then no longer leader in that term. Never while handing
    /// leadership over. With "release", returns `confirmed` unchanged.
    fn hold_without_quorum(&mut self, confirmed: Option<Instant>) -> Option<Instant> {
        let (state, term) = {
            let m = self.raft.borrow();
            (m.state, m.current_term)
        };
        let leading = state == ServerState::Leader;
        if leading && confirmed.is_some_and(|at| at.elapsed() < self.lease / 2) {
            self.claimed_in_term = Some(term);
            self.holding = false;
            return confirmed;
        }
        let hold = self.on_quorum_loss == VipOnQuorumLoss::Hold
            && self.held
            && leading
            && self.claimed_in_term == Some(term)
            && !self.standing_down.load(Ordering::Relaxed);
        if !hold {
            self.holding = false;
            return confirmed;
        }
        if !self.holding {
            self.holding = true;
            tracing::warn!(
                term,
                "no quorum confirms this leader; holding the VIPs anyway (vip_on_quorum_loss = \"hold\")"
            );
        }
        Some(Instant::now())
    }

    /// Renews the fence for what is left of the lease counted from the last
    /// confirmation round, and returns when that round was sent; says why
    /// not when there is nothing left.
    fn renew(&mut self, confirmed: Option<Instant>) -> Result<Instant, String> {
        let Some(asked) = confirmed else {
            return Err("not a leader confirmed by a quorum".to_string());
        };
        if self.raft.borrow().state != ServerState::Leader {
            return Err("stepped down".to_string());
        }
        let remaining = self.lease.saturating_sub(asked.elapsed());
        if remaining.is_zero() {
            return Err(format!(
                "no quorum confirmed the leader within the lease ({:?})",
                self.lease
            ));
        }
        if self.renewed_for == Some(asked) {
            return Ok(asked); // already granted up to the same expiry
        }
        self.fenced = true;
        let sent = Instant::now();
        fence::renew(&self.addresses, remaining).map_err(|e| format!("cannot renew the fence: {e}"))?;
        self.renewed_for = Some(asked);
        // The kernel counts `remaining` from when it took the message. A
        // stall in between (a pause, a stop, a slow kernel) grants more
        // than is left; beyond a small slack, take it back. (The lease is
        // half of what the other voters wait, so the slack is safe.)
        if sent.elapsed() > self.lease / 4 || asked.elapsed() >= self.lease {
            return Err("the fence renewal stalled; lease withdrawn".to_string());
        }
        Ok(asked)
    }

    /// Adds the addresses if this node does not hold them yet, and announces
    /// them, but only while the lease confirmed at `asked` lasts: a gratuitous
    /// ARP leaves on a packet socket, which the kernel fence does not see.
    fn claim_or_announce(&mut self, asked: Instant) {
        let in_lease = |owner: &Self| asked.elapsed() < owner.lease;
        if !self.held {
            // Held from the first address on, so a failure part-way
            // removes the ones already added.
            self.held = true;
            for vip in &self.vips {
                if let Err(e) = vip.add() {
                    self.release(&format!(
                        "cannot add {} to {}: {e}",
                        vip.spec.address, vip.spec.interface
                    ));
                    return;
                }
            }
            let labels: Vec<String> = self.vips.iter().map(Vip::label).collect();
            self.held_report.send_modify(|held| held.extend(labels));
            let term = self.raft.borrow().current_term;
            tracing::info!(vips = ?self.addresses, term, lease = ?self.lease, "VIPs claimed");
            if in_lease(self) {
                self.announce(CLAIM_ANNOUNCEMENTS);
            }
        } else if Instant::now() >= self.next_announcement && in_lease(self) {
            self.announce(1);
        }
    }

    fn announce(&mut self, times: usize) {
        for vip in &self.vips {
            vip.announce(times);
        }
        self.next_announcement = Instant::now() + REANNOUNCE_EVERY;
    }

    /// Withdraws the lease and the addresses. The fence goes first: from
    /// then on the kernel disowns the VIPs even if removing them fails.
    fn release(&mut self, reason: &str) {
        if self.fenced {
            if let Err(e) = fence::revoke(&self.addresses) {
                tracing::warn!(error = %e, "could not revoke the VIP lease (it expires by itself)");
            }
            self.fenced = false;
            self.renewed_for = None;
        }
        if !self.held {
            return;
        }
        for vip in &self.vips {
            if let Err(e) = vip.remove() {
                tracing::warn!(vip = %vip.spec.address, error = %e, "could not remove the VIP (fenced anyway)");
            }
        }
        self.held = false;
        let labels: Vec<String> = self.vips.iter().map(Vip::label).collect();
        self.held_report
            .send_modify(|held| held.retain(|h| !labels.contains(h)));
        tracing::info!(vips = ?self.addresses, reason, "VIPs released");
    }
}
