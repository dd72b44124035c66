//! The applied state: the [`ClusterState`] every committed command has built,
//! held in memory and published, once per applied batch, on a watch channel
//! the data plane and local reads follow. Durability comes from snapshots:
//! each one is written to `snapshot.bin` in the data dir (temporary file,
//! fsync, rename, fsync of the directory) and restored on open; openraft then
//! re-applies the log entries after the snapshot's last log id.
//!
//! The sticky-session tables ([`StickyTables`]) are applied in place rather
//! than copied (they may hold millions of entries); the data plane reads
//! them directly. A snapshot holds both: its data is the postcard encoding
//! of the [`ClusterState`] followed by that of the tables, taken while no
//! entry is being applied, so both are of one log position.
//!
//! `snapshot.bin` is an 8-byte magic (`RLBSNAP3`; `RLBSNAP2`, written
//! before format versions, is still read) followed by the postcard encoding
//! of the snapshot's metadata and data. The data is also what is sent to a
//! follower that installs it, so it is written in the cluster's effective
//! format version (`raftlb_config::snapshot_data`).

use super::log_store::OpenError;
use super::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::sticky::metrics::StickyMetrics;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use raftlb_config::{ClusterState, Command, Outcome, StickyChange, StickyTables, TableStats, snapshot_data};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// What the state machine has applied, as published after every batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub state: ClusterState,
    /// The last log entry applied (or restored from a snapshot).
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
}

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.bin.tmp";
/// Starts `snapshot.bin`; the digit is the file's version (2: sticky
/// tables follow the cluster state; 3: the data is versioned).
const MAGIC: &[u8; 8] = b"RLBSNAP3";
/// The file versions this binary reads: the digits after `RLBSNAP`.
const READS: std::ops::RangeInclusive<u8> = b'2'..=b'3';

/// A snapshot as `snapshot.bin` holds it (after [`MAGIC`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    meta: SnapshotMeta,
    /// The postcard-encoded [`ClusterState`], then the sticky tables.
    pub(crate) data: Vec<u8>,
}

/// The state machine. Clones share it: openraft builds snapshots through a
/// clone while the original keeps applying.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Where `snapshot.bin` lives.
    dir: PathBuf,
    /// Holds the current [`Applied`]; the one source of truth for it.
    applied: watch::Sender<Arc<Applied>>,
    /// The snapshot on disk, if any. Locked while one is being written, so
    /// that writers take turns and an older snapshot never replaces a newer.
    current: Mutex<Option<Arc<StoredSnapshot>>>,
    /// Snapshots built since open, for unique snapshot ids.
    built: AtomicU64,
    /// The committed sticky sessions, changed in place.
    sticky: Arc<StickyTables>,
    /// Where applying a sticky session records its replication lag.
    metrics: Arc<StickyMetrics>,
    /// Held while entries are applied and while a snapshot copies the
    /// state and tables, so a snapshot is of one log position.
    applying: Mutex<()>,
}

impl StateMachine {
    /// Opens the state machine whose snapshot lives in `dir` (file
    /// `dir/snapshot.bin`), restoring the last persisted snapshot if present;
    /// returns it with a watch receiver that sees every applied change.
    pub fn open(
        dir: &Path,
        metrics: Arc<StickyMetrics>,
    ) -> Result<(StateMachine, watch::Receiver<Arc<Applied>>), OpenError> {
        fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(SNAPSHOT_FILE);
        let sticky = Arc::new(StickyTables::default());
        let (applied, current) = match fs::read(&path) {
            Ok(bytes) => {
                let corrupt = |reason| OpenError::CorruptSnapshot {
                    path: path.clone(),
                    reason,
                };
                let stored = decode_file(&bytes).map_err(corrupt)?;
                let state = decode_data(&stored.data, &sticky).map_err(corrupt)?;
                let applied = Applied {
                    state,
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership.clone(),
                };
                (applied, Some(Arc::new(stored)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Applied::default(), None),
            Err(source) => return Err(OpenError::Read { path, source }),
        };
        let (sender, receiver) = watch::channel(Arc::new(applied));
        let machine = StateMachine {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                applied: sender,
                current: Mutex::new(current),
                built: AtomicU64::new(0),
                sticky,
                metrics,
                applying: Mutex::new(()),
            }),
        };
        Ok((machine, receiver))
    }

    /// The sticky tables' statistics and the log position they are of.
    pub fn sticky_stats(&self) -> (Option<LogId>, Vec<TableStats>) {
        let _applying = self.inner.applying.lock().unwrap_or_else(PoisonError::into_inner);
        let index = self.inner.applied.borrow().last_applied;
        (index, self.inner.sticky.stats())
    }

    /// The size of the snapshot on disk, if any.
    pub fn snapshot_bytes(&self) -> u64 {
        fs::metadata(self.inner.dir.join(SNAPSHOT_FILE)).map_or(0, |m| m.len())
    }

    /// The committed sticky sessions, for the data plane.
    pub fn sticky_tables(&self) -> Arc<StickyTables> {
        Arc::clone(&self.inner.sticky)
    }

    /// Writes `stored` as `snapshot.bin` and makes it the current snapshot,
    /// unless the current one is newer (a build racing an install).
    async fn store(&self, stored: StoredSnapshot) -> Result<(), StorageError> {
        let signature = stored.meta.signature();
        let inner = Arc::clone(&self.inner);
        let written = tokio::task::spawn_blocking(move || {
            let mut current = inner.current.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(current) = current.as_ref()
                && current.meta.last_log_id > stored.meta.last_log_id
            {
                return Ok(());
            }
            write_file(&inner.dir, &stored)?;
            *current = Some(Arc::new(stored));
            Ok::<(), io::Error>(())
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write_snapshot(Some(signature), &e).into()),
            Err(e) => Err(StorageIOError::write_snapshot(Some(signature), &e).into()),
        }
    }
}

/// Decodes `snapshot.bin`; the error says what is wrong with it.
pub(crate) fn decode_file(bytes: &[u8]) -> Result<StoredSnapshot, String> {
    let body = match bytes
        .strip_prefix(&MAGIC[..7])
        .and_then(|rest| rest.split_first())
    {
        Some((version, body)) if READS.contains(version) => body,
        Some((version, _)) => {
            return Err(format!(
                "it is in snapshot format {}, written by another raftlb version; this one reads formats {}–{} \
                 (run the raftlb that wrote it, or move the data dir aside and let the node catch up from the cluster)",
                char::from(*version),
                char::from(*READS.start()),
                char::from(*READS.end())
            ));
        }
        None => {
            return Err(format!(
                "it does not start with {:?}",
                String::from_utf8_lossy(MAGIC)
            ));
        }
    };
    let (stored, rest) = postcard::take_from_bytes::<StoredSnapshot>(body).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes follow the snapshot", rest.len()));
    }
    Ok(stored)
}

/// The cluster state in `data_dir`'s snapshot (a tool's and a test's
/// view of what the node keeps at rest).
pub fn snapshot_state(data_dir: &Path) -> Result<ClusterState, String> {
    let path = data_dir.join(SNAPSHOT_FILE);
    let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let stored = decode_file(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    snapshot_data::decode(&stored.data, None).map_err(|e| format!("{}: {e}", path.display()))
}

/// Decodes a snapshot's data: returns the cluster state and restores the
/// sticky tables into `sticky`.
pub(crate) fn decode_data(data: &[u8], sticky: &StickyTables) -> Result<ClusterState, String> {
    snapshot_data::decode(data, Some(sticky))
}

/// Applies the command of the entry at log `index`, sticky changes to the
/// tables, and records the replication lag of each sticky session applied.
fn apply_command(
    state: &mut ClusterState,
    index: u64,
    command: Command,
    sticky: &StickyTables,
    metrics: &StickyMetrics,
) -> Outcome {
    let stuck_at = |c: &Command| match c {
        Command::Sticky(StickyChange::Stick { at_ms, .. }) => Some(*at_ms),
        _ => None,
    };
    match &command {
        Command::Independent(commands) => commands
            .iter()
            .filter_map(stuck_at)
            .for_each(|at| metrics.applied(at)),
        other => stuck_at(other).into_iter().for_each(|at| metrics.applied(at)),
    }
    state.apply_entry(index, command, sticky)
}

/// Replaces `dir/snapshot.bin` atomically and durably.
fn write_file(dir: &Path, stored: &StoredSnapshot) -> io::Result<()> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend(postcard::to_stdvec(stored).map_err(io::Error::other)?);
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    File::open(dir)?.sync_all()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.inner.applied.borrow();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // openraft calls apply and install_snapshot one at a time (`&mut
        // self`); snapshot builders only read. So read, change a copy, publish.
        let inner = &self.inner;
        let _applying = inner.applying.lock().unwrap_or_else(PoisonError::into_inner);
        let current = Arc::clone(&inner.applied.borrow());
        let mut next = Applied::clone(&current);
        drop(current);
        let mut outcomes = Vec::new();
        for entry in entries {
            next.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Applied,
                EntryPayload::Normal(proposal) => {
                    let index = entry.log_id.index;
                    apply_command(
                        &mut next.state,
                        index,
                        proposal.command,
                        &inner.sticky,
                        &inner.metrics,
                    )
                }
                EntryPayload::Membership(membership) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Applied
                }
            };
            outcomes.push(outcome);
        }
        if !outcomes.is_empty() {
            self.inner.applied.send_replace(Arc::new(next));
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = {
            let _applying = self.inner.applying.lock().unwrap_or_else(PoisonError::into_inner);
            decode_data(&data, &self.inner.sticky)
                .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &io::Error::other(e)))?
        };
        self.store(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        self.inner.applied.send_replace(Arc::new(Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        }));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(current.map(|stored| Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (applied, data) = {
            let _applying = self.inner.applying.lock().unwrap_or_else(PoisonError::into_inner);
            let applied = Arc::clone(&self.inner.applied.borrow());
            let data = snapshot_data::encode(&applied.state, &self.inner.sticky)
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            (applied, data)
        };
        let built = self.inner.built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{built}", id.leader_id.term, id.index),
            None => format!("none-{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        self.store(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
