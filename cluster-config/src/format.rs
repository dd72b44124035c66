//! Format versions: which encodings of the replicated data a binary reads
//! and writes, and the rules that let binaries of two versions share a
//! cluster during a rolling upgrade.
//!
//! A *format version* numbers the encoding of everything a node stores or
//! sends to another node: Raft log entries ([`Proposal`](crate::Proposal)),
//! snapshot data ([`snapshot_data`](crate::snapshot_data)), the data dir
//! and the node-to-node messages. A binary reads every version in its
//! [`Formats`] range; what it *writes* is the cluster's **effective
//! version** (`ClusterState::cluster_version`), committed through Raft like
//! any state, so that every member can decode every entry. The leader raises
//! it (`Command::SetClusterVersion`) once every member supports the next
//! version; it never goes down. (etcd's cluster version works this way.)
//!
//! | version | what changed |
//! |---|---|
//! | 1 | every release before versions existed (up to commit b834ab7): a log entry is the bare postcard `Command`; snapshot data is `ClusterState ‖ sticky tables`; `snapshot.bin` starts `RLBSNAP2`; the data dir's identity file has no `format` line |
//! | 2 | a log entry says its version (an envelope around the command's bytes); snapshot data starts with a header holding the cluster version; `snapshot.bin` starts `RLBSNAP3`; the identity file records `format=2`; node-to-node messages carry the sender's formats and the cluster version; `SetClusterVersion` |
//! | 3 | the PROXY protocol and trusted proxies: `ListenerSpec::proxy_trusted`, `HttpLimits::trusted_proxies`, `PoolSpec::proxy_protocol` ([`since_v3`]); a `ClusterState` of version 3 or later starts with its version (a byte no `bool` takes) |
//! | 4 | the data dir only: the Raft log moves out of sled (`raft/`) into raftlb's own files (`raft-log/`), so a binary that reads only sled must refuse it; entries, snapshots and messages are as in 3 |
//! | 5 | QUIC: `ListenerSpec::quic` (HTTP/3 on `https` listeners, routing by connection ID on `udp` ones, [`since_v5`]) |
//! | 6 | DNS: `PoolSpec::discovery` and `PoolSpec::discovery_status`, `BackendSpec::discovered`, `ClusterSpec::gslb` and the state's GSLB site verdicts ([`since_v6`]); `Command::SetDiscovered`, `Command::SetGslb` and `Command::SetSiteHealth` |
//!
//! ## Changing a replicated type
//! Adding a field to anything a command or the state holds changes the
//! bytes. Before such a change: bump [`CURRENT`], freeze the types of the
//! version being left in a module of their own (what they decode and how
//! they convert to today's), have [`Proposal`](crate::Proposal) and the
//! snapshot data dispatch the old version to them, make
//! [`Command::format_needed`](crate::Command::format_needed) name the new
//! version for commands that use the change, and record samples of the new
//! version's bytes in `tests/formats.rs`. A binary supports two versions:
//! the one it writes and the one before, so an upgrade goes one version at
//! a time.
//!
//! A field that an older format simply lacks needs no frozen copy: mark it
//! `#[serde(with = "crate::format::since_v3")]` (or a `since_N` like it).
//! Encoded in an older format it takes no bytes (and a value other than
//! its default cannot be encoded there: the command that sets it needs
//! the newer format); decoded from one it is its default. What is being
//! encoded or decoded in which format is set by [`encoded_in`] around it:
//! a [`Proposal`](crate::Proposal) by its format, a
//! [`ClusterState`](crate::ClusterState) by its cluster version. Bare
//! encodings (a command outside a proposal) are format 1. Since formats
//! 1 to 6 differ only by such fields and appended commands (and 4 from 3
//! only in the data dir), this binary reads all six.

use std::cell::Cell;
use std::fmt;

/// The newest format this binary writes (once the cluster allows it).
pub const CURRENT: u16 = 6;
/// The oldest format this binary reads and writes for a mixed cluster.
pub const OLDEST: u16 = 1;

/// A range of format versions: what one binary supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    pub min: u16,
    pub max: u16,
}

impl Formats {
    /// What this build supports.
    pub const BUILT: Formats = Formats {
        min: OLDEST,
        max: CURRENT,
    };

    /// What a peer that does not say (a release before versions) supports.
    pub const UNVERSIONED: Formats = Formats { min: 1, max: 1 };

    /// The formats a peer announced, where 0 (a field the peer's release
    /// did not have) means a release before versions.
    pub fn announced(min: u32, max: u32) -> Formats {
        match (u16::try_from(min), u16::try_from(max)) {
            (Ok(min), Ok(max)) if min > 0 && max >= min => Formats { min, max },
            _ => Formats::UNVERSIONED,
        }
    }

    pub fn contains(self, version: u16) -> bool {
        (self.min..=self.max).contains(&version)
    }

    /// Whether a binary of these formats may take part in a cluster whose
    /// effective version is `cluster`; the error is the sentence to show.
    pub fn can_join(self, cluster: u16) -> Result<(), String> {
        if cluster > self.max {
            return Err(format!(
                "this binary reads formats {self}, but the cluster runs format {cluster}: it is too old \
                 to join; run a raftlb that reads format {cluster}"
            ));
        }
        if cluster < self.min {
            return Err(format!(
                "this binary reads formats {self}, but the cluster runs format {cluster}: it is more \
                 than one version newer; upgrade the cluster one version at a time (first to a raftlb \
                 that reads formats {cluster}–{})",
                cluster + 1
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Formats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.min == self.max {
            true => write!(f, "{}", self.min),
            false => write!(f, "{}–{}", self.min, self.max),
        }
    }
}

thread_local! {
    /// The format being encoded or decoded on this thread; 0: none said,
    /// which is format 1 (a bare command).
    static ENCODING: Cell<u16> = const { Cell::new(0) };
}

/// Runs `work` (an encoding or a decoding) in format `version`; what it
/// encodes inside another [`encoded_in`] follows the inner one.
pub fn encoded_in<T>(version: u16, work: impl FnOnce() -> T) -> T {
    struct Restore(u16);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENCODING.with(|encoding| encoding.set(self.0));
        }
    }
    let _restore = Restore(ENCODING.with(|encoding| encoding.replace(version)));
    work()
}

/// The format being encoded or decoded on this thread.
fn encoding() -> u16 {
    ENCODING.with(Cell::get).max(1)
}

/// `serde(with)` for a field first written in format 3 (see above).
pub mod since_v3 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize + Default + PartialEq,
        S: Serializer,
    {
        super::serialize_since(3, value, serializer)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        super::deserialize_since(3, deserializer)
    }
}

/// `serde(with)` for a field first written in format 5 (see above).
pub mod since_v5 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize + Default + PartialEq,
        S: Serializer,
    {
        super::serialize_since(5, value, serializer)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        super::deserialize_since(5, deserializer)
    }
}

/// `serde(with)` for a field first written in format 6 (see above).
pub mod since_v6 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize + Default + PartialEq,
        S: Serializer,
    {
        super::serialize_since(6, value, serializer)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        super::deserialize_since(6, deserializer)
    }
}

/// Encodes a field first written in format `since`: nothing in an older
/// format, where only its default can be said.
fn serialize_since<T, S>(since: u16, value: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: serde::Serialize + Default + PartialEq,
    S: serde::Serializer,
{
    if serializer.is_human_readable() || encoding() >= since {
        return value.serialize(serializer);
    }
    if *value != T::default() {
        return Err(serde::ser::Error::custom(format!(
            "a setting of format {since} cannot be written in format {}",
            encoding()
        )));
    }
    serializer.serialize_unit()
}

/// Decodes a field first written in format `since`: its default in an
/// older format.
fn deserialize_since<'de, T, D>(since: u16, deserializer: D) -> Result<T, D::Error>
where
    T: serde::Deserialize<'de> + Default,
    D: serde::Deserializer<'de>,
{
    if deserializer.is_human_readable() || encoding() >= since {
        return T::deserialize(deserializer);
    }
    <() as serde::Deserialize>::deserialize(deserializer)?;
    Ok(T::default())
}

/// The version every member can read: the lowest newest-format among
/// them, never below `current` (the effective version never goes down);
/// `None` while some member's formats are unknown.
pub fn next_cluster_version(current: u16, members: impl IntoIterator<Item = Option<Formats>>) -> Option<u16> {
    let mut lowest = u16::MAX;
    for member in members {
        lowest = lowest.min(member?.max);
    }
    (lowest != u16::MAX).then_some(lowest.max(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_needs_the_cluster_version_in_range() {
        let this = Formats { min: 2, max: 3 };
        assert!(this.can_join(2).is_ok());
        assert!(this.can_join(3).is_ok());
        let old = this.can_join(1).unwrap_err();
        assert!(old.contains("more than one version newer"), "{old}");
        assert!(old.contains("formats 1–2"), "{old}");
        let new = this.can_join(4).unwrap_err();
        assert!(new.contains("too old"), "{new}");
        assert!(new.contains("format 4"), "{new}");
    }

    #[test]
    fn unannounced_formats_are_the_first_version() {
        assert_eq!(Formats::announced(0, 0), Formats::UNVERSIONED);
        assert_eq!(Formats::announced(3, 2), Formats::UNVERSIONED);
        assert_eq!(Formats::announced(1, 2), Formats { min: 1, max: 2 });
        assert_eq!(Formats::announced(1, 70_000), Formats::UNVERSIONED);
    }

    #[test]
    fn the_cluster_version_rises_to_the_lowest_member_and_never_falls() {
        let f = |min, max| Some(Formats { min, max });
        assert_eq!(next_cluster_version(1, [f(1, 2), f(1, 1), f(1, 2)]), Some(1));
        assert_eq!(next_cluster_version(1, [f(1, 2), f(1, 2), f(1, 2)]), Some(2));
        assert_eq!(next_cluster_version(2, [f(1, 1)]), Some(2));
        assert_eq!(next_cluster_version(1, [f(1, 2), None]), None);
        assert_eq!(next_cluster_version(1, []), None);
    }
}
