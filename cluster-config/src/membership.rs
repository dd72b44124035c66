//! `[cluster]` as a node reads it: how it finds its cluster (its Raft
//! address, what it advertises, the initial voters), how its links are
//! secured, its Raft timing and what a VIP owner does without a quorum.
//! Node-local, never replicated.

use crate::peer_address::PeerAddress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How a node finds its cluster and proves it belongs (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipSpec {
    /// Names the cluster; bound into every certificate of it.
    pub cluster_id: String,
    /// How node-to-node and admin links are secured.
    pub links: LinkSecurity,
    /// This node's Raft and admin gRPC address. `None` (no `[cluster]`
    /// section) runs a cluster of one with no network service.
    pub raft: Option<SocketAddr>,
    /// Where the other nodes dial this one (`[cluster] advertise`), if not
    /// at `raft`: a DNS name, or the address a `0.0.0.0` bind is reached at.
    pub advertise: Option<PeerAddress>,
    /// The initial voters by node id, this node included; empty means a
    /// cluster of this node alone. Only read when a cluster first forms.
    pub peers: BTreeMap<u64, PeerAddress>,
    /// How fast a lost leader is noticed and replaced.
    pub timing: RaftTiming,
    /// What a leader owning a VIP does when it cannot confirm a quorum.
    pub vip_on_quorum_loss: VipOnQuorumLoss,
    /// The largest gRPC message this node sends or accepts (Raft and admin).
    pub max_message_bytes: usize,
    /// `[cluster] apply_file_on_reload`: a reload (SIGHUP, `raftlb
    /// reload`) commits the file's listeners and pools; otherwise it only
    /// says how the file differs (see [`MembershipSpec::file_is_truth`]).
    pub apply_file_on_reload: bool,
}

/// `[cluster.tls]`, or `insecure_cleartext = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkSecurity {
    /// No `[cluster]` section: no network service at all.
    Standalone,
    /// Mutual TLS 1.3 on every link, identities from the cluster's certificates.
    Tls(TlsFiles),
    /// Cleartext, unauthenticated: only when every Raft address is a
    /// loopback address (tests, demos on one host).
    InsecureCleartext,
}

/// `[cluster.tls]`: PEM files, as made by `raftlb certs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The cluster CA (or two, while the CA is rotated).
    pub ca_file: String,
    /// This node's certificate (leaf first).
    pub cert_file: String,
    /// This node's private key.
    pub key_file: String,
}

/// `[cluster] vip_on_quorum_loss`: what the owner of a `placement =
/// "leader"` VIP does when it can no longer confirm its leadership with a
/// quorum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VipOnQuorumLoss {
    /// Release it once the lease runs out: two nodes never answer for one
    /// VIP at once (safety over availability).
    #[default]
    Release,
    /// Keep renewing the lease while this node still believes it leads
    /// (until it hears a newer leader or term): the VIP stays up through a
    /// quorum loss, but a partitioned old leader and a new leader on the
    /// majority side can both answer for it.
    Hold,
}

/// Raft's clocks (`heartbeat_interval`, `election_timeout` in `[cluster]`),
/// and the leases derived from them.
///
/// The leader confirms its standing twice every `heartbeat_interval` (a
/// round of heartbeats answered by a majority; openraft sends its own every
/// one and a half, and gives each AppendEntries one `heartbeat_interval` to
/// answer, so a shorter one fails replication under load). A follower that has heard nothing from the
/// leader for `election_timeout` ([`vote_lease`](Self::vote_lease)) asks the
/// other voters whether they would vote for it (pre-vote) and stands once a
/// majority says yes. Until then each of them refuses to vote, so no
/// successor is elected before `election_timeout` has passed since the last
/// round the old leader sent; the old leader drops its VIPs well before
/// that ([`vip_lease`](Self::vip_lease)). The defaults replace a killed
/// leader in about 150–200 ms on a LAN; raise both on links whose round
/// trip approaches `heartbeat_interval`, or spurious elections follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftTiming {
    pub heartbeat_interval: Duration,
    /// How long a follower waits without hearing from the leader before it
    /// asks to stand, and how long a voter refuses other candidates after
    /// it last heard from the leader.
    pub election_timeout: Duration,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(150),
        }
    }
}

impl RaftTiming {
    /// How long a voter that heard from a leader refuses to vote for anyone
    /// else, and how long a follower waits in silence before it asks to
    /// stand: one election timeout.
    pub fn vote_lease(self) -> Duration {
        self.election_timeout
    }

    /// How often the leader confirms its leadership with a quorum round (its
    /// VIP lease renewals, and heartbeats followers hear): twice a heartbeat
    /// interval, so four rounds fall within a VIP lease at the least ratio.
    pub fn confirm_every(self) -> Duration {
        self.heartbeat_interval / 2
    }

    /// How long a leader may hold its VIPs after the instant just before a
    /// round a quorum answered: two thirds of the vote lease. The kernel
    /// may keep the VIP's fence a quarter lease longer (a late renewal),
    /// so the hold ends by 5/6 of the vote lease, and every voter that
    /// answered that round still refuses to elect a successor until the
    /// whole vote lease has passed on its own clock: the sixth left over
    /// covers clocks that run up to 8 % apart.
    pub fn vip_lease(self) -> Duration {
        self.election_timeout * 2 / 3
    }
}

impl MembershipSpec {
    /// Cluster id of a node without a `[cluster]` section.
    pub const STANDALONE_ID: &str = "standalone";
    /// Default of `[cluster] max_message_bytes`.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

    /// Where the other nodes dial this one: `advertise`, else `raft`.
    pub fn advertised(&self) -> Option<PeerAddress> {
        self.advertise.clone().or(self.raft.map(PeerAddress::from))
    }

    /// A cluster of one with no network service (no `[cluster]` section).
    pub fn standalone() -> Self {
        MembershipSpec {
            cluster_id: Self::STANDALONE_ID.to_string(),
            links: LinkSecurity::Standalone,
            raft: None,
            advertise: None,
            peers: BTreeMap::new(),
            timing: RaftTiming::default(),
            vip_on_quorum_loss: VipOnQuorumLoss::default(),
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            apply_file_on_reload: false,
        }
    }

    /// Whether the file's listeners and pools are committed when it is
    /// read again: always on a standalone node (its file is the only way
    /// to change it), on a cluster node with `apply_file_on_reload`.
    pub fn file_is_truth(&self) -> bool {
        self.raft.is_none() || self.apply_file_on_reload
    }
}
