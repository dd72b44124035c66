//! [`ClusterState`]: the replicated state and its deterministic
//! [`apply`](ClusterState::apply). Applying is a pure function of the state
//! and the command (and, for a discovery change, which records it, the
//! entry's log index): no clock, no randomness, no I/O, so every node that
//! applies the same log holds the same state. A command is validated, then
//! checked against the state's invariants before it takes effect, and
//! rejected whole if it would break one; nothing a command carries can make
//! `apply` panic. The work is proportional to the command, not the state
//! (the `draft` module keeps the indexes), except for a batch, which is
//! applied to one copy and checked whole.

use crate::certificate::Certificate;
use crate::command::{Command, Outcome};
use crate::draft::Draft;
use crate::gslb::{GslbSpec, SiteVerdict, SiteVerdicts};
use crate::health::HealthReports;
use crate::limits::{MAX_CERTIFICATES, MAX_SPREAD_VIPS};
use crate::spec::{ClusterSpec, ListenerSpec, PoolSpec};
use crate::sticky::StickySecret;
use crate::sticky_table::StickyTables;
use crate::validate::{self, shown};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

pub(crate) mod encoding;

/// Everything the cluster agrees on. Encoded in its cluster version
/// (see [`encoding`](self::encoding)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Set by the first [`Command::Bootstrap`]; later ones are refused even
    /// if every listener and pool has since been removed.
    bootstrapped: bool,
    spec: ClusterSpec,
    /// Which node owns each `placement = "spread"` VIP.
    vip_owners: BTreeMap<IpAddr, u64>,
    /// What `cookie` sticky sessions are authenticated with.
    sticky_secret: Option<StickySecret>,
    /// TLS certificates by name, for `https` listeners.
    certificates: BTreeMap<String, Certificate>,
    /// Each node's last active-check verdict on each backend.
    health: HealthReports,
    /// The leader's last verdict on each GSLB site. Format 6.
    sites: SiteVerdicts,
    /// The effective format version (see [`format`](crate::format)); 0
    /// reads as 1. Up to version 2 not part of this type's encoding, whose
    /// bytes are those of format 1: snapshot data carries it in its header
    /// ([`snapshot_data`](crate::snapshot_data)); from 3 on its first byte.
    cluster_version: u16,
    /// The Raft log index of the entry being applied (0 outside
    /// [`apply_entry`](Self::apply_entry)): what a discovery change records.
    /// Not encoded; always 0 between entries.
    applying_index: u64,
}

impl ClusterState {
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The node a spread VIP is assigned to.
    pub fn vip_owner(&self, address: IpAddr) -> Option<u64> {
        self.vip_owners.get(&address).copied()
    }

    /// Every spread VIP's owner.
    pub fn vip_owners(&self) -> &BTreeMap<IpAddr, u64> {
        &self.vip_owners
    }

    /// The secret `cookie` sticky sessions are authenticated with, once the
    /// first leader has set it.
    pub fn sticky_secret(&self) -> Option<&StickySecret> {
        self.sticky_secret.as_ref()
    }

    /// TLS certificates by name.
    pub fn certificates(&self) -> &BTreeMap<String, Certificate> {
        &self.certificates
    }

    /// Each node's last active-check verdict on each backend.
    pub fn health(&self) -> &HealthReports {
        &self.health
    }

    /// The leader's last committed verdict on each GSLB site.
    pub fn site_verdicts(&self) -> &SiteVerdicts {
        &self.sites
    }

    /// This state as admin replies carry it: certificates keep their chain
    /// (public) but lose their private key, and the sticky-cookie secret is
    /// left out. Secrets travel only inside Raft replication.
    pub fn without_secrets(&self) -> ClusterState {
        let mut public = self.clone();
        public.sticky_secret = None;
        for certificate in public.certificates.values_mut() {
            certificate.key_pem = String::new();
        }
        public
    }

    /// The format version every member reads, so the one entries and
    /// snapshots are written in (see [`format`](crate::format)).
    pub fn cluster_version(&self) -> u16 {
        self.cluster_version.max(1)
    }

    /// Sets the version as snapshot data records it (1 is kept as 0, as
    /// a state that never had one holds it).
    pub(crate) fn restore_cluster_version(&mut self, version: u16) {
        self.cluster_version = if version <= 1 { 0 } else { version };
    }

    /// Whether the cluster has been seeded from a configuration file.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// Applies `command` if it is valid ([`Command::validate`]) and the
    /// result keeps every invariant; otherwise leaves the state unchanged
    /// and says why. Sticky-table changes are refused: they need the
    /// tables ([`apply_with`](Self::apply_with)).
    pub fn apply(&mut self, command: Command) -> Outcome {
        self.apply_to(command, None)
    }

    /// Applies `command`, sending sticky-table changes to `sticky`.
    pub fn apply_with(&mut self, command: Command, sticky: &StickyTables) -> Outcome {
        self.apply_to(command, Some(sticky))
    }

    /// Applies the log entry at `index` holding `command`: as
    /// [`apply_with`](Self::apply_with), and a discovery change records
    /// `index` (the same on every node: every node applies that entry).
    pub fn apply_entry(&mut self, index: u64, command: Command, sticky: &StickyTables) -> Outcome {
        self.applying_index = index;
        let outcome = self.apply_to(command, Some(sticky));
        self.applying_index = 0;
        outcome
    }

    fn apply_to(&mut self, command: Command, sticky: Option<&StickyTables>) -> Outcome {
        let mut draft = Draft::new(std::mem::take(&mut self.spec));
        let outcome = self.apply_in(&mut draft, command, sticky);
        self.spec = draft.finish();
        outcome
    }

    /// Applies one command to `draft` (the spec, taken out of `self` while
    /// the entry is applied). An `Independent` group is checked for its
    /// shape, then each of its commands is validated and applied alone.
    fn apply_in(&mut self, draft: &mut Draft, command: Command, sticky: Option<&StickyTables>) -> Outcome {
        let valid = match &command {
            Command::Independent(_) => validate::shape(&command),
            other => other.validate(),
        };
        if let Err(invalid) = valid {
            return Outcome::Rejected(invalid.0);
        }
        // What the state holds must be writable in its version.
        let needed = command.format_needed();
        let grouped = matches!(command, Command::Independent(_) | Command::SetClusterVersion(_));
        if needed > self.cluster_version() && !grouped {
            return Outcome::Rejected(format!(
                "\"{command}\" needs cluster version {needed}; the cluster runs version {}",
                self.cluster_version()
            ));
        }
        match command {
            Command::Independent(commands) => Outcome::Each(
                commands
                    .into_iter()
                    .map(|c| self.apply_in(draft, c, sticky))
                    .collect(),
            ),
            Command::Sticky(change) => match sticky {
                Some(tables) => tables.apply(draft.spec(), change),
                None => Outcome::Rejected("sticky changes need the sticky tables".to_string()),
            },
            Command::PutCertificate { name, certificate } => {
                if self.certificates.len() >= MAX_CERTIFICATES && !self.certificates.contains_key(&name) {
                    return Outcome::Rejected(format!(
                        "the cluster holds {MAX_CERTIFICATES} certificates, the most it may"
                    ));
                }
                self.certificates.insert(name, certificate);
                Outcome::Applied
            }
            Command::RemoveCertificate { name } => match self.certificates.remove(&name) {
                Some(_) => Outcome::Applied,
                None => Outcome::Rejected(format!("no certificate named \"{}\"", shown(&name))),
            },
            Command::ReportHealth {
                node,
                pool,
                address,
                up,
            } => {
                if !draft.has_backend(&pool, address) {
                    return Outcome::Rejected(format!("no backend {address} in pool \"{}\"", shown(&pool)));
                }
                self.health.record(&pool, address, node, up);
                Outcome::Applied
            }
            Command::SetSiteHealth { name, site, up, load } => {
                let known = draft
                    .spec()
                    .gslb
                    .as_ref()
                    .and_then(|g| g.name(&name))
                    .is_some_and(|n| n.sites.iter().any(|s| s.name == site));
                if !known {
                    return Outcome::Rejected(format!(
                        "no GSLB site \"{}\" of name \"{}\"",
                        shown(&site),
                        shown(&name)
                    ));
                }
                self.sites.set(&name, &site, SiteVerdict { up, load });
                Outcome::Applied
            }
            Command::SetStickySecret(secret) => {
                if self.sticky_secret.is_some() {
                    return Outcome::Rejected("the sticky-cookie secret is already set".to_string());
                }
                self.sticky_secret = Some(secret);
                Outcome::Applied
            }
            Command::AssignVip {
                address,
                owner: Some(node),
            } => {
                if self.vip_owners.len() >= MAX_SPREAD_VIPS && !self.vip_owners.contains_key(&address) {
                    return Outcome::Rejected(format!(
                        "the cluster assigns {MAX_SPREAD_VIPS} VIPs, the most it may"
                    ));
                }
                self.vip_owners.insert(address, node);
                Outcome::Applied
            }
            Command::SetClusterVersion(version) => {
                // Only a version this binary reads: a cluster never runs one
                // some member cannot (the leader raises it once every member
                // supports it), so every member agrees. Checked here, not in
                // `validate`, so that an admin's request for a newer version
                // meets the writer's refusal naming the members still older.
                if version > crate::format::CURRENT {
                    return Outcome::Rejected(format!(
                        "cluster version {version}: this binary reads formats {}",
                        crate::format::Formats::BUILT
                    ));
                }
                if version <= self.cluster_version() {
                    return Outcome::Rejected(format!(
                        "the cluster version is already {}; it never goes down",
                        self.cluster_version()
                    ));
                }
                self.cluster_version = version;
                Outcome::Applied
            }
            Command::AssignVip { address, owner: None } => {
                self.vip_owners.remove(&address);
                Outcome::Applied
            }
            Command::SetDiscovered(update) => {
                let index = self.applying_index;
                match crate::discovery::apply(draft, update, index) {
                    Ok(removed) => {
                        for (pool, address) in removed {
                            self.health.forget(&pool, address);
                        }
                        Outcome::Applied
                    }
                    Err(reason) => Outcome::Rejected(reason),
                }
            }
            command => {
                let gslb = matches!(
                    command,
                    Command::SetGslb(_) | Command::Batch(_) | Command::Bootstrap(_)
                );
                let before = gslb.then(|| draft.spec().gslb.clone());
                match crate::discovery::keeps_discovered(draft, command)
                    .and_then(|command| self.change_spec(draft, command))
                {
                    Ok(()) if gslb => {
                        let after = draft.spec().gslb.as_deref();
                        self.sites.retain_in(after);
                        if before.is_some_and(|b| b.as_deref() != after) {
                            self.sites.serial = self.sites.serial.wrapping_add(1);
                        }
                        Outcome::Applied
                    }
                    Ok(()) => Outcome::Applied,
                    Err(reason) => Outcome::Rejected(reason),
                }
            }
        }
    }

    /// A listener, pool or backend command, or a batch of them: a batch is
    /// applied to a copy, checked whole, and kept only if it all holds.
    fn change_spec(&mut self, draft: &mut Draft, command: Command) -> Result<(), String> {
        let bootstraps = bootstraps(&command);
        if bootstraps && self.bootstrapped {
            return Err("the cluster is already bootstrapped".to_string());
        }
        match command {
            Command::Batch(commands) => {
                let mut trial = Draft::new(draft.spec().clone());
                for command in commands {
                    trial.change(command)?;
                }
                let spec = trial.finish();
                check(&spec)?;
                *draft = Draft::new(spec);
                self.health
                    .retain(|pool, address| draft.has_backend(pool, address));
            }
            command => {
                let orphans = match &command {
                    Command::RemoveBackend { pool, address } => Some((pool.clone(), Some(*address))),
                    Command::RemovePool { name } => Some((name.clone(), None)),
                    Command::UpdatePool(pool) => Some((pool.name.clone(), None)),
                    _ => None,
                };
                draft.apply_alone(command)?;
                match orphans {
                    Some((pool, Some(address))) => self.health.forget(&pool, address),
                    Some((pool, None)) => self.health.retain_pool(&pool, |a| draft.has_backend(&pool, a)),
                    None => {}
                }
            }
        }
        self.bootstrapped |= bootstraps;
        Ok(())
    }
}

/// Whether `command` is, or a batch holds, a `Bootstrap`.
fn bootstraps(command: &Command) -> bool {
    match command {
        Command::Bootstrap(_) => true,
        Command::Batch(commands) => commands.iter().any(bootstraps),
        _ => false,
    }
}

/// Whether `listener` can serve `pool`: a TCP or UDP listener sees no
/// header, cookie or path to keep sessions by or to hash.
pub(crate) fn serves(listener: &ListenerSpec, pool: &PoolSpec) -> Result<(), String> {
    if listener.protocol.is_http() {
        return Ok(());
    }
    if let Some(sticky) = &pool.sticky
        && sticky.kind.needs_http()
    {
        return Err(format!(
            "{} listener \"{}\" uses pool \"{}\", whose sticky kind \"{}\" needs HTTP (use kind = \"source_ip\")",
            listener.protocol.name(),
            listener.name,
            pool.name,
            sticky.kind.name()
        ));
    }
    if let Some(key) = pool.algorithm.hash_key(&pool.hash_key)
        && key.needs_http()
    {
        return Err(format!(
            "{} listener \"{}\" uses pool \"{}\", which hashes hash_key = \"{}\" (needs HTTP; use hash_key = \"source_ip\")",
            listener.protocol.name(),
            listener.name,
            pool.name,
            shown(&key.to_string())
        ));
    }
    Ok(())
}

/// The invariants a state must keep (the same ones the file's validation
/// enforces, there with lines and key paths): counts within limits, names
/// unique, pools with valid backends, listeners sending to pools that
/// exist and that they can serve, no two listeners on one socket.
pub fn check(spec: &ClusterSpec) -> Result<(), String> {
    validate::counts(spec)?;
    let mut pools = HashMap::with_capacity(spec.pools.len());
    for pool in &spec.pools {
        if pools.insert(pool.name.as_str(), pool).is_some() {
            return Err(format!("duplicate pool name \"{}\"", pool.name));
        }
        validate::backends(pool)?;
    }
    let mut names = HashSet::new();
    for (i, listener) in spec.listeners.iter().enumerate() {
        if !names.insert(listener.name.as_str()) {
            return Err(format!("duplicate listener name \"{}\"", listener.name));
        }
        validate::pool_or_routes(listener)?;
        for name in listener.pools() {
            let Some(pool) = pools.get(name) else {
                return Err(format!(
                    "listener \"{}\" uses pool \"{}\", which does not exist",
                    listener.name,
                    shown(name)
                ));
            };
            serves(listener, pool)?;
        }
        if let Some(gslb) = &spec.gslb
            && gslb_clash(gslb, listener)
        {
            return Err(format!(
                "[gslb] on {} conflicts with listener \"{}\" on {}",
                gslb.bind, listener.name, listener.bind
            ));
        }
        let clash = spec.listeners[..i].iter().find(|other| listener.overlaps(other));
        if let Some(other) = clash {
            return Err(format!(
                "listener \"{}\" on {} conflicts with listener \"{}\" on {}",
                listener.name, listener.bind, other.name, other.bind
            ));
        }
    }
    Ok(())
}

/// Whether the GSLB server's sockets (UDP and TCP on its bind) would
/// collide with one of `listener`'s.
pub(crate) fn gslb_clash(gslb: &GslbSpec, listener: &ListenerSpec) -> bool {
    use crate::spec::{Protocol, binds_overlap};
    [Protocol::Udp, Protocol::Tcp]
        .into_iter()
        .any(|p| listener.binds().any(|b| binds_overlap((p, gslb.bind), b)))
}
