//! Which format versions each node supports, as this node has heard them,
//! and the decisions that follow (see `raftlb_config::format`):
//! - the format a proposal is written in, or why the cluster cannot take
//!   it yet ([`Versions::format_for`]);
//! - whether this node may take part at all, given the cluster version a
//!   leader's message carries ([`Versions::admit_cluster`]);
//! - the version the leader raises the cluster to once every member
//!   supports it ([`keep_raised`]).
//!
//! Every node-to-node message says its sender's formats (a release before
//! versions says nothing, which reads as format 1 only), so the leader
//! knows every follower's after one heartbeat and a follower knows its
//! leader's. A node that refuses to take part says why; the leader keeps
//! the sentence until that node answers again ([`Versions::refusal`]), so
//! `ctl member add` can give it.

use super::state_machine::Applied;
use super::types::{NodeId, Raft};
use super::writer::Writer;
use raftlb_config::Command;
use raftlb_config::format::{self, Formats};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// How a node's refusal to take part in a cluster starts (then the reason).
pub const REFUSES_TO_JOIN: &str = "node refuses to join: ";

/// How often the leader looks whether the cluster version can rise.
const RAISE_EVERY: Duration = Duration::from_millis(500);

/// The formats of this node and of the peers it has heard from.
#[derive(Debug)]
pub struct Versions {
    me: NodeId,
    this: Formats,
    peers: Mutex<BTreeMap<NodeId, Formats>>,
    /// Why a peer refused this node's last message, until it answers again.
    refusals: Mutex<BTreeMap<NodeId, String>>,
}

impl Versions {
    pub fn new(me: NodeId) -> Arc<Versions> {
        Arc::new(Versions {
            me,
            this: this_binary(),
            peers: Mutex::default(),
            refusals: Mutex::default(),
        })
    }

    /// What this node supports.
    pub fn this(&self) -> Formats {
        self.this
    }

    /// Records what `node` said it supports.
    pub fn heard(&self, node: NodeId, formats: Formats) {
        if node == self.me {
            return;
        }
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if peers.insert(node, formats) != Some(formats) {
            tracing::info!(node, formats = %formats, "a peer's format versions");
        }
    }

    /// `node` answered a message of this node's: what it said it supports.
    pub fn answered(&self, node: NodeId, formats: Formats) {
        self.heard(node, formats);
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&node);
    }

    /// `node` refused to take part in this node's cluster, for `reason`.
    pub fn refused(&self, node: NodeId, reason: &str) {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, reason.to_string());
    }

    /// Why `node` refused this node's last message, if it did.
    pub fn refusal(&self, node: NodeId) -> Option<String> {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
    }

    /// What `node` supports, if known.
    pub fn of(&self, node: NodeId) -> Option<Formats> {
        if node == self.me {
            return Some(self.this);
        }
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .copied()
    }

    /// The format `command` is written in while the cluster runs
    /// `cluster_version` with `members`, or the sentence refusing it.
    pub fn format_for(
        &self,
        command: &Command,
        cluster_version: u16,
        members: impl IntoIterator<Item = NodeId>,
    ) -> Result<u16, String> {
        let needed = command.format_needed();
        if needed <= cluster_version {
            return Ok(cluster_version);
        }
        let lagging: Vec<String> = members
            .into_iter()
            .filter_map(|node| match self.of(node) {
                Some(formats) if formats.max >= needed => None,
                Some(formats) => Some(format!("node {node} (formats {formats})")),
                None => Some(format!("node {node} (formats not yet known)")),
            })
            .collect();
        // Raising the version is what waits for every member; it is then
        // written in the version it sets, which all of them read.
        if matches!(command, Command::SetClusterVersion(_)) && lagging.is_empty() {
            return Ok(needed);
        }
        let waiting = match lagging.is_empty() {
            true => "every member supports it, and the leader raises the version shortly".to_string(),
            false => format!("still on an older version: {}", lagging.join(", ")),
        };
        Err(format!(
            "refused: \"{command}\" needs cluster version {needed}, but the cluster runs version \
             {cluster_version}; {waiting}"
        ))
    }

    /// Whether this node may follow a leader whose cluster runs `cluster`
    /// (0: a leader of a release before versions, so version 1).
    pub fn admit_cluster(&self, cluster: u32) -> Result<(), String> {
        let cluster = u16::try_from(cluster).unwrap_or(u16::MAX).max(1);
        self.this.can_join(cluster)
    }
}

/// What this binary supports; a build with failpoints takes
/// `RAFTLB_TEST_FORMATS=MIN-MAX` instead, for tests that fabricate a node
/// of another version.
fn this_binary() -> Formats {
    #[cfg(feature = "failpoints")]
    if let Some((min, max)) = std::env::var("RAFTLB_TEST_FORMATS")
        .ok()
        .and_then(|v| v.split_once('-').map(|(a, b)| (a.parse().ok(), b.parse().ok())))
        .and_then(|(a, b)| a.zip(b))
    {
        return Formats { min, max };
    }
    Formats::BUILT
}

/// While this node leads: raises the cluster version as soon as every
/// member (voters and learners) is known to support a newer one.
pub async fn keep_raised(
    raft: Raft,
    versions: Arc<Versions>,
    writer: Writer,
    mut applied: watch::Receiver<Arc<Applied>>,
) {
    loop {
        let _ = tokio::time::timeout(RAISE_EVERY, applied.changed()).await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            continue;
        }
        let current = applied.borrow().state.cluster_version();
        let members: Vec<NodeId> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let Some(next) = format::next_cluster_version(current, members.iter().map(|id| versions.of(*id)))
        else {
            continue;
        };
        // Never above what this leader writes.
        let next = next.min(versions.this().max);
        if next <= current {
            continue;
        }
        match writer.submit(Command::SetClusterVersion(next), false).await {
            Ok((index, outcome)) if outcome.is_applied() => {
                tracing::info!(
                    index,
                    version = next,
                    "raised the cluster version: every member supports it"
                )
            }
            Ok((_, outcome)) => tracing::debug!(reason = outcome.rejection(), "cluster version not raised"),
            Err(status) => tracing::debug!(reason = status.message(), "cluster version not raised"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(peers: &[(NodeId, u16, u16)]) -> Arc<Versions> {
        let versions = Versions::new(1);
        for &(node, min, max) in peers {
            versions.heard(node, Formats { min, max });
        }
        versions
    }

    #[test]
    fn commands_of_the_cluster_version_are_written_in_it() {
        let v = versions(&[(2, 1, 1)]);
        let command = Command::RemovePool { name: "a".into() };
        assert_eq!(v.format_for(&command, 1, [1, 2]), Ok(1));
        assert_eq!(v.format_for(&command, 2, [1, 2]), Ok(2));
    }

    #[test]
    fn raising_the_version_names_the_members_still_older() {
        let v = versions(&[(2, 1, 1), (3, 1, 2)]);
        let error = v
            .format_for(&Command::SetClusterVersion(2), 1, [1, 2, 3, 4])
            .unwrap_err();
        assert!(error.contains("node 2 (formats 1)"), "{error}");
        assert!(error.contains("node 4 (formats not yet known)"), "{error}");
        assert!(!error.contains("node 3"), "{error}");
        let all = versions(&[(2, 1, 2), (3, 1, 2)]);
        assert_eq!(
            all.format_for(&Command::SetClusterVersion(2), 1, [1, 2, 3]),
            Ok(2)
        );
    }

    #[test]
    fn a_leader_of_another_version_is_admitted_only_one_apart() {
        let v = versions(&[]);
        assert!(v.admit_cluster(0).is_ok());
        assert!(v.admit_cluster(u32::from(format::CURRENT)).is_ok());
        let newer = v.admit_cluster(u32::from(format::CURRENT) + 1).unwrap_err();
        assert!(newer.contains("too old"), "{newer}");
    }
}
