//! The commands the Raft log carries, and what applying one did. A command
//! names everything it touches by name (listener, pool) or address (backend),
//! carries every value it sets (time included, from the proposer), and is
//! either applied whole or rejected whole with the reason. Decoding bounds
//! how deep batches nest and how long they are (`decode`);
//! [`Command::validate`] checks every value without the state.

use crate::acl::AclChange;
use crate::certificate::Certificate;
use crate::client_limits::ClientLimits;
use crate::spec::{AdminState, BackendSpec, ClusterSpec, ListenerSpec, PoolSpec};
use crate::sticky::{StickyChange, StickySecret};
use crate::validate::{self, Invalid};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// One change to the replicated cluster state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first state of a new cluster: the seed file's listeners and pools.
    /// Only accepted while the state is empty.
    Bootstrap(ClusterSpec),
    AddListener(ListenerSpec),
    /// Replaces the listener of the same name.
    UpdateListener(ListenerSpec),
    RemoveListener {
        name: String,
    },
    AddPool(PoolSpec),
    /// Replaces the pool of the same name, backends included.
    UpdatePool(PoolSpec),
    RemovePool {
        name: String,
    },
    AddBackend {
        pool: String,
        backend: BackendSpec,
    },
    RemoveBackend {
        pool: String,
        address: SocketAddr,
    },
    SetWeight {
        pool: String,
        address: SocketAddr,
        weight: u32,
    },
    SetAdminState {
        pool: String,
        address: SocketAddr,
        state: AdminState,
    },
    /// Several commands applied atomically: all, or none if any is rejected
    /// (`raftlb ctl apply` commits a whole file's difference this way).
    /// Holds only listener, pool and backend commands (and batches of them).
    Batch(#[serde(deserialize_with = "crate::decode::commands")] Vec<Command>),
    /// Several unrelated commands in one log entry, each applied or
    /// rejected on its own: what the batching proposer commits, so a burst
    /// of data-plane proposals costs one Raft round trip, not one each.
    Independent(#[serde(deserialize_with = "crate::decode::commands")] Vec<Command>),
    /// Gives a `placement = "spread"` VIP to a node, or takes it from
    /// whoever had it (`owner: None`). Proposed by the leader only.
    AssignVip {
        address: std::net::IpAddr,
        owner: Option<u64>,
    },
    /// A change to the sticky-session tables (see
    /// [`StickyTables`](crate::StickyTables)).
    Sticky(StickyChange),
    /// Sets the secret `cookie` sessions are authenticated with; refused
    /// once one is set. Proposed by the leader only.
    SetStickySecret(StickySecret),
    /// Adds or replaces the certificate called `name` (`ctl cert add`).
    PutCertificate {
        name: String,
        certificate: Certificate,
    },
    RemoveCertificate {
        name: String,
    },
    /// `node`'s active checks found `address` in `pool` up or down (a
    /// transition; see [`HealthReports`](crate::HealthReports)).
    ReportHealth {
        node: u64,
        pool: String,
        address: SocketAddr,
        up: bool,
    },
    /// Replaces a listener's per-source limits (`ctl listener limits`).
    SetClientLimits {
        listener: String,
        limits: ClientLimits,
    },
    /// Adds, replaces and removes rules of a listener's ACL (`ctl acl`).
    ChangeAcl {
        listener: String,
        change: AclChange,
    },
    /// Raises the cluster's effective format version (see
    /// [`format`](crate::format)): proposed by the leader once every member
    /// supports it; never lowers it. Format 2 and later.
    SetClusterVersion(u16),
    /// The Raft leader's verdict on a pool's DNS discovery: replaces the
    /// pool's discovered backends (static ones are never touched) and
    /// records the status. Format 6.
    SetDiscovered(crate::discovery::DiscoveryUpdate),
    /// Adds, replaces or (`None`) removes the `[gslb]` section. Format 6.
    SetGslb(Option<Box<crate::gslb::GslbSpec>>),
    /// The leader's check found a GSLB site up or down, or its reported
    /// load changed by a step (see [`SiteVerdicts`](crate::gslb::SiteVerdicts)).
    /// Proposed by the leader only. Format 6.
    SetSiteHealth {
        name: String,
        site: String,
        up: bool,
        load: u32,
    },
}

impl Command {
    /// Checks every value the command carries, as the file parser checks
    /// the file's, without looking at the state: what a node runs before
    /// proposing a command from the admin API. `apply` runs it too and
    /// rejects what fails (each command of an `Independent` on its own).
    pub fn validate(&self) -> Result<(), Invalid> {
        validate::command(self)
    }

    /// The oldest format version that can carry this command: a node
    /// proposes it only once the cluster's effective version is at least
    /// that (see [`format`](crate::format)).
    pub fn format_needed(&self) -> u16 {
        match self {
            Command::SetClusterVersion(version) => (*version).max(2),
            Command::SetDiscovered(_) => 6,
            Command::Bootstrap(spec) => spec.format_needed(),
            Command::SetGslb(_) | Command::SetSiteHealth { .. } => crate::gslb::GslbSpec::FORMAT,
            Command::AddListener(listener) | Command::UpdateListener(listener) => listener.format_needed(),
            Command::AddPool(pool) | Command::UpdatePool(pool) => pool.format_needed(),
            Command::Batch(commands) | Command::Independent(commands) => {
                commands.iter().map(Command::format_needed).max().unwrap_or(1)
            }
            _ => 1,
        }
    }

    /// Decodes a command from postcard bytes (the admin API's `Write`),
    /// bare or in the envelope of a later format (see
    /// [`Proposal`](crate::Proposal)), within the bounds on nesting and
    /// length; the error says why not.
    pub fn decode(bytes: &[u8]) -> Result<Command, String> {
        crate::Proposal::decode(bytes).map(|proposal| proposal.command)
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    /// Nothing changed; the reason is meant for the operator.
    Rejected(String),
    /// One outcome per command of a [`Command::Independent`], in order.
    Each(Vec<Outcome>),
}

impl Outcome {
    /// Whether everything the command asked for took effect.
    pub fn is_applied(&self) -> bool {
        match self {
            Outcome::Applied => true,
            Outcome::Rejected(_) => false,
            Outcome::Each(outcomes) => outcomes.iter().all(Outcome::is_applied),
        }
    }

    /// Why (part of) the command was rejected; empty when it all applied.
    pub fn rejection(&self) -> String {
        match self {
            Outcome::Applied => String::new(),
            Outcome::Rejected(reason) => reason.clone(),
            Outcome::Each(outcomes) => outcomes
                .iter()
                .map(Outcome::rejection)
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Bootstrap(spec) => write!(
                f,
                "bootstrap {} listeners, {} pools",
                spec.listeners.len(),
                spec.pools.len()
            ),
            Command::AddListener(l) => write!(f, "add listener {}", l.summary()),
            Command::UpdateListener(l) => write!(f, "update listener {}", l.summary()),
            Command::RemoveListener { name } => write!(f, "remove listener {name}"),
            Command::SetClientLimits { listener, limits } => write!(
                f,
                "set client limits of listener {listener}: {} connections, {}/s new, {}/s requests",
                limits.connections, limits.connection_rate, limits.request_rate
            ),
            Command::SetClusterVersion(version) => write!(f, "set the cluster version to {version}"),
            Command::SetDiscovered(update) => {
                write!(f, "discovery of pool {}: ", update.pool)?;
                match &update.backends {
                    Some(set) => write!(f, "{} backends", set.len())?,
                    None => write!(f, "backends kept")?,
                }
                match update.failure {
                    Some((failure, _)) => write!(f, " ({})", failure.name()),
                    None => Ok(()),
                }
            }
            Command::ChangeAcl { listener, change } => write!(
                f,
                "change ACL of listener {listener}: {} rules set, {} removed",
                change.set.len(),
                change.remove.len()
            ),
            Command::AddPool(p) => write!(
                f,
                "add pool {} ({}, {} backends)",
                p.name,
                p.algorithm.name(),
                p.backends.len()
            ),
            Command::UpdatePool(p) => write!(
                f,
                "update pool {} ({}, {} backends)",
                p.name,
                p.algorithm.name(),
                p.backends.len()
            ),
            Command::RemovePool { name } => write!(f, "remove pool {name}"),
            Command::AddBackend { pool, backend } => write!(
                f,
                "add backend {} (weight {}) to pool {pool}",
                backend.address, backend.weight
            ),
            Command::RemoveBackend { pool, address } => {
                write!(f, "remove backend {address} from pool {pool}")
            }
            Command::SetWeight {
                pool,
                address,
                weight,
            } => write!(f, "set weight of {address} in pool {pool} to {weight}"),
            Command::SetAdminState { pool, address, state } => {
                write!(f, "set {address} in pool {pool} to {}", state.name())
            }
            Command::AssignVip { address, owner } => match owner {
                Some(node) => write!(f, "assign VIP {address} to node {node}"),
                None => write!(f, "unassign VIP {address}"),
            },
            Command::Sticky(change) => write!(f, "{change}"),
            Command::SetStickySecret(_) => write!(f, "set the sticky-cookie secret"),
            Command::PutCertificate { name, .. } => write!(f, "put certificate {name}"),
            Command::RemoveCertificate { name } => write!(f, "remove certificate {name}"),
            Command::ReportHealth {
                node,
                pool,
                address,
                up,
            } => {
                let verdict = if *up { "up" } else { "down" };
                write!(f, "node {node} sees {address} in pool {pool} {verdict}")
            }
            Command::SetGslb(Some(gslb)) => write!(
                f,
                "set [gslb] zone {} ({} names) on {}",
                gslb.zone,
                gslb.names.len(),
                gslb.bind
            ),
            Command::SetGslb(None) => write!(f, "remove [gslb]"),
            Command::SetSiteHealth { name, site, up, load } => {
                let verdict = if *up { "up" } else { "down" };
                write!(f, "GSLB site {site} of {name} {verdict} (load {load})")
            }
            Command::Batch(commands) | Command::Independent(commands) => {
                let kind = if matches!(self, Command::Batch(_)) {
                    "batch"
                } else {
                    "independent commands"
                };
                write!(f, "{kind} of {}", commands.len())?;
                for c in commands {
                    write!(f, "; {c}")?;
                }
                Ok(())
            }
        }
    }
}
