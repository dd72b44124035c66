//! The Raft log and vote on disk, in sled: one tree of entries keyed by their
//! index (big-endian, so sled's order is the log's order) and one of metadata
//! (the vote, the last purged log id, the committed log id), every value
//! encoded with postcard. A vote or an appended batch is fsynced
//! (`flush_async`) before openraft hears it is saved, so a node never
//! acknowledges what a crash could take back; the vote is read back
//! uncommitted, so a restarted node never resumes leading (see `read_vote`).
//! Entries are stored sealed ([`LogKeys`]); a purge seals what remains
//! under a new key and deletes the old ones, so the purged entries are
//! gone from the data dir's files even where sled keeps their bytes.
//!
//! Also home of [`OpenError`], why the log or the state machine's snapshot
//! could not be opened; a file that fails to decode is reported, never
//! rewritten or removed.

use super::log_keys::{Epochs, LogKeys};
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use raftlb_config::proposal::decode_carrier;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why the Raft log or the state machine's snapshot could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the Raft log at {path}: {source}")]
    Log { path: PathBuf, source: sled::Error },
    #[error("the Raft log at {path} is corrupt: entry {index} cannot be decoded: {reason}")]
    CorruptEntry {
        path: PathBuf,
        index: u64,
        reason: String,
    },
    #[error("the Raft log at {path} is corrupt: {reason}")]
    CorruptLog { path: PathBuf, reason: String },
    #[error("the snapshot {path} is corrupt: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot create the directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("the Raft log's key file {path}: {reason}")]
    Keys { path: PathBuf, reason: String },
}

const LOGS_TREE: &str = "logs";
const META_TREE: &str = "meta";
const VOTE: &str = "vote";
const LAST_PURGED: &str = "last_purged";
const COMMITTED: &str = "committed";

/// The Raft log and vote of one node. Clones share the database: openraft's
/// replication tasks read through clones while the Raft core writes.
#[derive(Clone)]
pub struct LogStore {
    path: Arc<PathBuf>,
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    keys: Arc<LogKeys>,
    /// The index `save_committed` was last given, for `/metrics`.
    committed: Arc<AtomicU64>,
    /// The last entry's id, as `get_log_state` would read it, kept up to
    /// date by every write so that pre-votes read it without decoding.
    last: Arc<Mutex<Option<LogId>>>,
}

// By hand: sled's own `Debug` prints every page of the database.
impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (creating if absent) the sled database at `path` (a directory),
    /// and checks that every entry and metadata value decodes and that the
    /// entries follow each other without a hole.
    pub fn open(path: &Path) -> Result<LogStore, OpenError> {
        let sled_error = |source| OpenError::Log {
            path: path.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
            // Written far more than read back: well under sled's 1 GiB default. (It bounds
            // cached on-disk bytes, not RSS: the churn test measures ~300 MB either way.)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(sled_error)?;
        let logs = db.open_tree(LOGS_TREE).map_err(sled_error)?;
        let meta = db.open_tree(META_TREE).map_err(sled_error)?;
        let keys_path = path.with_extension("keys");
        let keys = LogKeys::open(&keys_path, logs.is_empty()).map_err(|reason| OpenError::Keys {
            path: keys_path.clone(),
            reason,
        })?;
        let store = LogStore {
            path: Arc::new(path.to_path_buf()),
            db,
            logs,
            meta,
            keys: Arc::new(keys),
            committed: Arc::default(),
            last: Arc::default(),
        };
        store.check()?;
        let last = store.stored_last_log_id().map_err(|e| OpenError::CorruptLog {
            path: path.to_path_buf(),
            reason: format!("its last entry cannot be read: {e}"),
        })?;
        store.set_last(last);
        store.committed.store(store.committed_index(), Ordering::Relaxed);
        Ok(store)
    }

    /// Size in bytes sled reports on disk (`db.size_on_disk()`), for figures;
    /// 0 if sled cannot tell.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Refuses a log that openraft could not trust: undecodable values,
    /// an entry stored under another index, or a hole between entries.
    fn check(&self) -> Result<(), OpenError> {
        let corrupt = |reason: String| OpenError::CorruptLog {
            path: self.path.to_path_buf(),
            reason,
        };
        for key in [VOTE, LAST_PURGED, COMMITTED] {
            match self.meta.get(key) {
                Ok(None) => {}
                Ok(Some(bytes)) => {
                    let decoded = match key {
                        VOTE => postcard::from_bytes::<Vote>(&bytes).map(drop),
                        _ => postcard::from_bytes::<LogId>(&bytes).map(drop),
                    };
                    decoded.map_err(|e| corrupt(format!("the {key} cannot be decoded: {e}")))?;
                }
                Err(source) => {
                    return Err(OpenError::Log {
                        path: self.path.to_path_buf(),
                        source,
                    });
                }
            }
        }
        let mut previous: Option<u64> = None;
        let epochs = self.keys.read();
        for item in self.logs.iter() {
            let (key, value) = item.map_err(|source| OpenError::Log {
                path: self.path.to_path_buf(),
                source,
            })?;
            let index = index_of(&key).map_err(corrupt)?;
            let plain = epochs
                .open(index, &value)
                .map_err(|reason| OpenError::CorruptEntry {
                    path: self.path.to_path_buf(),
                    index,
                    reason,
                })?;
            let entry = decode_carrier::<Entry>(&plain).map_err(|reason| OpenError::CorruptEntry {
                path: self.path.to_path_buf(),
                index,
                reason,
            })?;
            if entry.log_id.index != index {
                return Err(OpenError::CorruptEntry {
                    path: self.path.to_path_buf(),
                    index,
                    reason: format!("it holds the entry of index {}", entry.log_id.index),
                });
            }
            if let Some(previous) = previous
                && index != previous + 1
            {
                return Err(corrupt(format!(
                    "entry {index} follows entry {previous}: the log has a hole"
                )));
            }
            previous = Some(index);
        }
        Ok(())
    }

    /// The index of the last entry this node knew committed when it last
    /// stopped (a lower bound: the id is saved lazily); 0 if none.
    pub fn committed_index(&self) -> u64 {
        self.read_meta::<LogId>(COMMITTED)
            .ok()
            .flatten()
            .map_or(0, |id| id.index)
    }

    /// The last committed index this store was told of, as it changes.
    pub fn committed(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.committed)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        match self.meta.get(key).map_err(|e| AnyError::new(&e))? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| AnyError::error(format!("the {key} cannot be decoded: {e}"))),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), AnyError> {
        let bytes = postcard::to_stdvec(value).map_err(|e| AnyError::new(&e))?;
        self.meta.insert(key, bytes).map_err(|e| AnyError::new(&e))?;
        Ok(())
    }

    /// Waits until everything written so far is on disk (sled fsyncs).
    async fn flush(&self) -> Result<(), AnyError> {
        self.db
            .flush_async()
            .await
            .map(drop)
            .map_err(|e| AnyError::new(&e))
    }

    /// Removes every entry whose index is in `range`, atomically.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), AnyError> {
        let mut batch = sled::Batch::default();
        for key in self.logs.range(range).keys() {
            batch.remove(key.map_err(|e| AnyError::new(&e))?);
        }
        self.logs.apply_batch(batch).map_err(|e| AnyError::new(&e))
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("a key of {} bytes is not a log index", key.len()))
}

fn decode_entry(epochs: &Epochs, key: &[u8], value: &[u8]) -> Result<Entry, AnyError> {
    let index = index_of(key).map_err(AnyError::error)?;
    let plain = epochs
        .open(index, value)
        .map_err(|e| AnyError::error(format!("entry {index} cannot be opened: {e}")))?;
    decode_carrier(&plain).map_err(|e| AnyError::error(format!("entry {index} cannot be decoded: {e}")))
}

fn key_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(index) => Bound::Included(key(*index)),
        Bound::Excluded(index) => Bound::Excluded(key(*index)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let range = (key_bound(range.start_bound()), key_bound(range.end_bound()));
        let mut entries = Vec::new();
        let epochs = self.keys.read();
        for item in self.logs.range(range) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(decode_entry(&epochs, &key, &value).map_err(StorageIOError::read_logs)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> =
            self.read_meta(LAST_PURGED).map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.stored_last_log_id().map_err(StorageIOError::read_logs)?,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote).map_err(StorageIOError::write_vote)?;
        self.flush().await.map_err(StorageIOError::write_vote)?;
        Ok(())
    }

    /// Read once, at startup, and returned *uncommitted*: the node starts as
    /// a follower that still refuses other candidates of the saved term, never
    /// as the leader its saved vote may name. openraft 0.9 would restore such
    /// a node as leader of the same term, and its linearizable reads would
    /// then wait only for the committed index saved (lazily) before the
    /// crash: a write acknowledged just before it could read as undone
    /// (jepsen `kill`, test `restarted_leader_serves_no_stale_read`). A new
    /// election gives the node a term of its own, whose first entry bounds
    /// its reads. etcd's raft, too, restarts every node as a follower.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote: Option<Vote> = self.read_meta(VOTE).map_err(StorageIOError::read_vote)?;
        Ok(vote.map(|vote| Vote {
            committed: false,
            ..vote
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: losing the newest committed id only re-applies less on
        // restart, and the next append or vote flushes it anyway.
        let written = match committed {
            Some(committed) => self.write_meta(COMMITTED, &committed),
            None => self
                .meta
                .remove(COMMITTED)
                .map(drop)
                .map_err(|e| AnyError::new(&e)),
        };
        written.map_err(StorageIOError::write)?;
        self.committed
            .store(committed.map_or(0, |id| id.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta(COMMITTED).map_err(StorageIOError::read)?)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            let bytes =
                postcard::to_stdvec(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            let sealed = self
                .keys
                .seal(entry.log_id.index, &bytes)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::error(e)))?;
            batch.insert(&key(entry.log_id.index), sealed);
        }
        self.logs
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        if last.is_some() {
            self.set_last(last);
        }
        self.flush().await.map_err(StorageIOError::write_logs)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(key(log_id.index)..)
            .map_err(StorageIOError::write_logs)?;
        self.set_last(self.stored_last_log_id().map_err(StorageIOError::read_logs)?);
        self.flush().await.map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point first, durably: entries must never be missing
        // below a last_purged_log_id that a crash took back.
        self.write_meta(LAST_PURGED, &log_id)
            .map_err(StorageIOError::write_logs)?;
        self.flush().await.map_err(StorageIOError::write_logs)?;
        self.remove_range(..=key(log_id.index))
            .map_err(StorageIOError::write_logs)?;
        let last = self.last_log_id().max(Some(log_id));
        self.set_last(last);
        self.forget_purged(log_id.index)
            .await
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }
}

impl LogStore {
    /// The last entry's id (or the purge point's, when every entry was
    /// purged), without reading the store.
    pub fn last_log_id(&self) -> Option<LogId> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_last(&self, last: Option<LogId>) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = last;
    }

    /// The last entry's id as stored (decoding that entry), or the purge
    /// point's if it is later: entries at or below it may survive a crash
    /// mid-purge, and the purge point still bounds the log from below.
    fn stored_last_log_id(&self) -> Result<Option<LogId>, AnyError> {
        let last_purged: Option<LogId> = self.read_meta(LAST_PURGED)?;
        let epochs = self.keys.read();
        let last_entry = match self.logs.last().map_err(|e| AnyError::new(&e))? {
            Some((key, value)) => Some(decode_entry(&epochs, &key, &value)?.log_id),
            None => None,
        };
        Ok(last_entry.max(last_purged))
    }

    /// After a purge up to `index`: a new epoch; the entries after `index`
    /// sealed again under it, durably; then every older key deleted, and
    /// with them whatever sled still keeps of the purged entries.
    async fn forget_purged(&self, index: u64) -> Result<(), AnyError> {
        self.keys.start_epoch().map_err(AnyError::error)?;
        let mut batch = sled::Batch::default();
        for item in self.logs.range(key(index.saturating_add(1))..) {
            let (key, value) = item.map_err(|e| AnyError::new(&e))?;
            let at = index_of(&key).map_err(AnyError::error)?;
            batch.insert(key, self.keys.reseal(at, &value).map_err(AnyError::error)?);
        }
        self.logs.apply_batch(batch).map_err(|e| AnyError::new(&e))?;
        self.flush().await?;
        self.keys.forget_old_epochs().map_err(AnyError::error)
    }
}
