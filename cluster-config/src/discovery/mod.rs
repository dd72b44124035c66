//! DNS discovery of a pool's backends (format 6): what a pool's
//! `discovery` resolves ([`DiscoverySpec`]), what the cluster committed
//! about the answers ([`DiscoveryStatus`], [`Command::SetDiscovered`]), and
//! the pure rules the leader follows ([`backends_of`], [`decide`]). No I/O:
//! the node sends the queries and reads the clock.
//!
//! [`Command::SetDiscovered`]: crate::Command::SetDiscovered

use crate::limits::MAX_WEIGHT;
use crate::spec::PoolSpec;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

mod apply;

pub use apply::discovered;
pub(crate) use apply::{apply, keeps_discovered};

/// The most backends one pool's discovery holds; an answer with more keeps
/// the first ones in address order.
pub const MAX_DISCOVERED: usize = 1024;
/// The committed status's last-good time is refreshed at most this often
/// while answers stay good and unchanged (one small entry per pool).
pub const REFRESH_LAST_GOOD: Duration = Duration::from_secs(30);

/// The record type a pool's discovery asks for (`type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordType {
    /// IPv4 addresses, on the pool's `port`.
    #[default]
    A,
    /// IPv6 addresses, on the pool's `port`.
    Aaaa,
    /// Targets with their port, priority and weight (RFC 2782).
    Srv,
}

impl RecordType {
    pub const ALL: [(&'static str, RecordType); 3] = [
        ("A", RecordType::A),
        ("AAAA", RecordType::Aaaa),
        ("SRV", RecordType::Srv),
    ];

    pub fn name(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Srv => "SRV",
        }
    }
}

/// A pool's `discovery = { … }`: the backends are what a DNS name
/// answers, resolved by the Raft leader only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverySpec {
    /// The name asked for, e.g. `app.service.consul`.
    pub name: String,
    pub record: RecordType,
    /// A and AAAA: the backends' port. SRV: 0 (each record says its own).
    pub port: u16,
    /// The servers asked (in turn, the next on a timeout); empty: the
    /// `nameserver` lines of the leader's `/etc/resolv.conf`.
    pub resolvers: Vec<SocketAddr>,
    /// How often the name is asked again (sooner when the answer's TTL is
    /// shorter, never sooner than `min_ttl`).
    pub interval: Duration,
    pub min_ttl: Duration,
    /// How long NXDOMAIN must be answered before the set is emptied.
    pub nxdomain_hold: Duration,
    /// How long one resolver has to answer one query.
    pub timeout: Duration,
}

impl DiscoverySpec {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    pub const DEFAULT_NXDOMAIN_HOLD: Duration = Duration::from_secs(30);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const MAX_RESOLVERS: usize = 8;

    /// When to ask again after an answer whose smallest TTL is `ttl`.
    pub fn next_after(&self, ttl: Option<Duration>) -> Duration {
        let wait = ttl.map_or(self.interval, |ttl| ttl.min(self.interval));
        wait.max(self.min_ttl)
    }
}

/// Why the last query gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DiscoveryFailure {
    /// No resolver answered in time (or at all: a closed port's ICMP
    /// refusal counts as no answer), or none is configured.
    Timeout,
    /// SERVFAIL.
    ServFail,
    /// NOERROR with no record of the type asked (NODATA).
    Empty,
    /// The name does not exist.
    NxDomain,
    /// Another answer code, or an answer that did not decode.
    Error,
}

impl DiscoveryFailure {
    pub const ALL: [DiscoveryFailure; 5] = [
        DiscoveryFailure::Timeout,
        DiscoveryFailure::ServFail,
        DiscoveryFailure::Empty,
        DiscoveryFailure::NxDomain,
        DiscoveryFailure::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DiscoveryFailure::Timeout => "timeout",
            DiscoveryFailure::ServFail => "servfail",
            DiscoveryFailure::Empty => "empty",
            DiscoveryFailure::NxDomain => "nxdomain",
            DiscoveryFailure::Error => "error",
        }
    }
}

/// What the cluster last committed about a pool's discovery: replicated in
/// the pool, so `ctl pools` shows it on every node. The times are the
/// proposing leader's clock (Unix milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryStatus {
    /// How many times the discovered set changed.
    pub changes: u64,
    /// The Raft log index of the entry that last changed the set (0: none
    /// yet): the same on every node, since every node applies that entry.
    pub changed_at: u64,
    /// When a resolver last gave a usable answer (0: never).
    pub last_good_ms: u64,
    /// The current failure, and since when it has lasted.
    pub failure: Option<(DiscoveryFailure, u64)>,
}

/// One discovered backend: an address and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Discovered {
    pub address: SocketAddr,
    pub weight: u32,
}

/// [`Command::SetDiscovered`](crate::Command::SetDiscovered): the
/// leader's verdict on one pool's latest answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryUpdate {
    pub pool: String,
    /// The new discovered set, replacing the old one whole; `None`: the set
    /// is kept (a failure, or a refresh of the status only).
    pub backends: Option<Vec<Discovered>>,
    pub last_good_ms: u64,
    pub failure: Option<(DiscoveryFailure, u64)>,
}

/// One usable record of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub address: IpAddr,
    /// SRV: the record's port; A/AAAA: 0 (the spec's port is used).
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// What one round of queries gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Records (SRV targets already resolved to addresses); never empty.
    Records(Vec<Record>),
    Failed(DiscoveryFailure),
}

/// The backend set an answer names: for SRV the records of the lowest
/// priority present only, each weight scaled into `1..=MAX_WEIGHT` (weight
/// 0 becomes 1, the smallest share; weights above `MAX_WEIGHT` are scaled
/// down together, keeping their ratios); for A/AAAA weight 1 on the spec's
/// port. Records no backend can be (port 0, an unspecified address) are
/// left out. Sorted by address, one entry per address (the largest
/// weight), at most [`MAX_DISCOVERED`].
pub fn backends_of(spec: &DiscoverySpec, records: &[Record]) -> Vec<Discovered> {
    let srv = spec.record == RecordType::Srv;
    let usable: Vec<Record> = records
        .iter()
        .filter(|r| !r.address.is_unspecified() && (if srv { r.port } else { spec.port }) != 0)
        .copied()
        .collect();
    let records = usable.as_slice();
    let lowest = records.iter().map(|r| r.priority).min().unwrap_or(0);
    let chosen: Vec<&Record> = records.iter().filter(|r| !srv || r.priority == lowest).collect();
    let largest = chosen.iter().map(|r| u64::from(r.weight)).max().unwrap_or(1);
    let weight = |w: u16| -> u32 {
        if !srv {
            return 1;
        }
        let w = u64::from(w);
        let scaled = match largest > u64::from(MAX_WEIGHT) {
            true => w * u64::from(MAX_WEIGHT) / largest,
            false => w,
        };
        scaled.clamp(1, u64::from(MAX_WEIGHT)) as u32
    };
    let mut set: Vec<Discovered> = chosen
        .iter()
        .map(|r| Discovered {
            address: SocketAddr::new(r.address, if srv { r.port } else { spec.port }),
            weight: weight(r.weight),
        })
        .collect();
    // Largest weight first within an address, then one per address.
    set.sort_by(|a, b| a.address.cmp(&b.address).then(b.weight.cmp(&a.weight)));
    set.dedup_by_key(|d| d.address);
    set.truncate(MAX_DISCOVERED);
    set
}

/// The leader's decision on `pool`'s latest answer, given what the
/// cluster committed: the update to propose, or `None` when nothing needs
/// saying (or the pool has no discovery).
///
/// A usable answer proposes its set (less the pool's static addresses,
/// which discovery never takes) when it differs from the committed one,
/// else refreshes the status if a failure ended or the last good time is
/// older than [`REFRESH_LAST_GOOD`]. NXDOMAIN keeps the set until it has
/// been answered for `nxdomain_hold` (timed from the committed failure, so
/// a new leader continues the hold), then empties it. Any other failure
/// keeps the set; it is proposed once when it starts (or changes kind).
pub fn decide(pool: &PoolSpec, answer: &Answer, now_ms: u64) -> Option<DiscoveryUpdate> {
    let spec = pool.discovery.as_ref()?;
    let status = &pool.discovery_status;
    let mut committed = discovered(pool);
    committed.sort();
    let update = |backends, last_good_ms, failure| DiscoveryUpdate {
        pool: pool.name.clone(),
        backends,
        last_good_ms,
        failure,
    };
    match answer {
        Answer::Records(records) => {
            let statics = static_addresses(pool);
            let mut set = backends_of(spec, records);
            if set.is_empty() {
                // Nothing usable answered: as an empty answer.
                return decide(pool, &Answer::Failed(DiscoveryFailure::Empty), now_ms);
            }
            set.retain(|d| !statics.contains(&d.address));
            let stale = now_ms.saturating_sub(status.last_good_ms) >= REFRESH_LAST_GOOD.as_millis() as u64;
            if set != committed {
                Some(update(Some(set), now_ms, None))
            } else if status.failure.is_some() || stale {
                Some(update(None, now_ms, None))
            } else {
                None
            }
        }
        Answer::Failed(DiscoveryFailure::NxDomain) => {
            let since = match status.failure {
                Some((DiscoveryFailure::NxDomain, since)) => since,
                _ => now_ms,
            };
            let failure = Some((DiscoveryFailure::NxDomain, since));
            let held = now_ms.saturating_sub(since) >= spec.nxdomain_hold.as_millis() as u64;
            if held && !committed.is_empty() {
                Some(update(Some(Vec::new()), status.last_good_ms, failure))
            } else if status.failure != failure {
                Some(update(None, status.last_good_ms, failure))
            } else {
                None
            }
        }
        Answer::Failed(kind) => match status.failure {
            Some((current, _)) if current == *kind => None,
            _ => Some(update(None, status.last_good_ms, Some((*kind, now_ms)))),
        },
    }
}

/// The addresses of `pool`'s static backends: discovery never touches
/// them, and an answer naming one of them leaves it static.
pub(crate) fn static_addresses(pool: &PoolSpec) -> HashSet<SocketAddr> {
    pool.backends
        .iter()
        .filter(|b| !b.discovered)
        .map(|b| b.address)
        .collect()
}
