//! The Raft log and vote on disk, in `DATA_DIR/raft-log/`: the entries in
//! an append-only file ([`LogFile`]), the vote, the purge point and the
//! committed id in small files beside it ([`log_meta`](super::log_meta)).
//! An appended batch or a vote is fsynced before openraft hears it is
//! saved (appends by the sync thread, [`Syncer`], off the control
//! runtime), so a node never acknowledges what a crash could take back;
//! the vote is read back uncommitted, so a restarted node never resumes
//! leading (see `read_vote`). Entries are stored sealed ([`LogKeys`]); a
//! purge seals what remains under a new key, writes it to a new file and
//! deletes the old one, so the purged entries are gone from the data dir.
//! Memory: 8 bytes an entry kept (its offset), whatever the churn.
//!
//! Also home of [`OpenError`], why the log or the state machine's snapshot
//! could not be opened; a file that fails to decode is reported, never
//! rewritten or removed.

use super::log_file::{FileError, LogFile};
use super::log_keys::{Epochs, LogKeys};
use super::log_meta::{CommittedFile, PURGED, VOTE};
use super::log_sync::{Syncer, Waiter};
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use raftlb_config::proposal::decode_carrier;
use std::fmt::Debug;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why the Raft log or the state machine's snapshot could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the Raft log at {path}: {source}")]
    Log { path: PathBuf, source: std::io::Error },
    #[error(
        "the Raft log at {path} is held by another process ({source}); a node's data dir serves one process at a time"
    )]
    Locked { path: PathBuf, source: std::io::Error },
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
    #[error("cannot move the Raft log at {path} out of sled: {reason}")]
    Migrate { path: PathBuf, reason: String },
}

/// The log's directory in a data dir.
pub const LOG_DIR: &str = "raft-log";
/// The sealing keys' file in a data dir.
pub const KEYS_FILE: &str = "raft.keys";
/// Held (`flock`) by the process whose store is open.
const LOCK_FILE: &str = "lock";
/// Entries decoded at a time when opening checks the log.
const CHECK_CHUNK: u64 = 4096;

/// The Raft log and vote of one node. Clones share the files: openraft's
/// replication tasks read through clones while the Raft core writes.
#[derive(Clone, Debug)]
pub struct LogStore {
    dir: Arc<PathBuf>,
    entries: Arc<Mutex<LogFile>>,
    syncer: Syncer,
    keys: Arc<LogKeys>,
    committed_file: Arc<CommittedFile>,
    /// The lock file, held while any clone lives.
    _lock: Arc<File>,
    /// The index `save_committed` was last given, for `/metrics`.
    committed: Arc<AtomicU64>,
    /// The purge point, as in its file.
    purged: Arc<Mutex<Option<LogId>>>,
    /// The last entry's id (or the purge point's, if later), kept up to
    /// date by every write so that pre-votes read it without decoding.
    last: Arc<Mutex<Option<LogId>>>,
}

impl LogStore {
    /// Opens (creating if absent) the log in `data_dir`, and checks that
    /// every entry and fact decodes and that the entries follow each other
    /// without a hole. A purge a crash interrupted is finished.
    pub fn open(data_dir: &Path) -> Result<LogStore, OpenError> {
        let dir = data_dir.join(LOG_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| OpenError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let io_error = |source| OpenError::Log {
            path: dir.clone(),
            source,
        };
        let lock = lock(&dir)?;
        let (entries, recovered) = LogFile::open(&dir).map_err(|e| match e {
            FileError::Io(path, source) => OpenError::Log { path, source },
            FileError::Corrupt(path, reason) => OpenError::CorruptLog { path, reason },
        })?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                path = %dir.display(),
                bytes = recovered.torn_bytes,
                "cut the Raft log's last write, which a crash left unfinished (it was never acknowledged)"
            );
        }
        let keys_path = data_dir.join(KEYS_FILE);
        let keys =
            LogKeys::open(&keys_path, entries.last_index().is_none()).map_err(|reason| OpenError::Keys {
                path: keys_path.clone(),
                reason,
            })?;
        let corrupt = |reason: String| OpenError::CorruptLog {
            path: dir.clone(),
            reason,
        };
        VOTE.read::<Vote>(&dir).map_err(corrupt)?;
        let purged = PURGED.read::<LogId>(&dir).map_err(corrupt)?;
        let store = LogStore {
            committed_file: Arc::new(CommittedFile::open(&dir).map_err(io_error)?),
            syncer: Syncer::start().map_err(io_error)?,
            dir: Arc::new(dir.clone()),
            entries: Arc::new(Mutex::new(entries)),
            keys: Arc::new(keys),
            _lock: Arc::new(lock),
            committed: Arc::default(),
            purged: Arc::new(Mutex::new(purged)),
            last: Arc::default(),
        };
        store.check()?;
        let first = store.file().first_index();
        if let Some(purged) = purged
            && first.is_some_and(|first| first <= purged.index)
        {
            store
                .forget_purged(purged.index)
                .map_err(|e| OpenError::CorruptLog {
                    path: dir.clone(),
                    reason: format!("cannot finish the purge up to {}: {e}", purged.index),
                })?;
        }
        let last = store.stored_last_log_id().map_err(|e| OpenError::CorruptLog {
            path: dir.clone(),
            reason: format!("its last entry cannot be read: {e}"),
        })?;
        store.set_last(last);
        store.committed.store(store.committed_index(), Ordering::Relaxed);
        Ok(store)
    }

    /// Bytes the log's files hold, for figures.
    pub fn size_on_disk(&self) -> u64 {
        std::fs::read_dir(&*self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|item| item.metadata().ok())
            .map(|metadata| metadata.len())
            .sum()
    }

    fn file(&self) -> MutexGuard<'_, LogFile> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a log that openraft could not trust: an entry that cannot
    /// be opened or decoded, or one stored under another index.
    fn check(&self) -> Result<(), OpenError> {
        let held = {
            let entries = self.file();
            (entries.first_index(), entries.last_index())
        };
        let (Some(first), Some(last)) = held else {
            return Ok(());
        };
        let epochs = self.keys.read();
        for from in (first..=last).step_by(CHECK_CHUNK as usize) {
            let sealed = self
                .file()
                .read(from, from + CHECK_CHUNK)
                .map_err(|source| OpenError::Log {
                    path: self.dir.to_path_buf(),
                    source,
                })?;
            for (index, value) in sealed {
                let entry =
                    decode_entry(&epochs, index, &value).map_err(|reason| OpenError::CorruptEntry {
                        path: self.dir.to_path_buf(),
                        index,
                        reason: reason.to_string(),
                    })?;
                if entry.log_id.index != index {
                    return Err(OpenError::CorruptEntry {
                        path: self.dir.to_path_buf(),
                        index,
                        reason: format!("it holds the entry of index {}", entry.log_id.index),
                    });
                }
            }
        }
        Ok(())
    }

    /// The index of the last entry this node knew committed when it last
    /// stopped (a lower bound: the id is saved lazily); 0 if none.
    pub fn committed_index(&self) -> u64 {
        self.committed_file.read::<LogId>().map_or(0, |id| id.index)
    }

    /// The last committed index this store was told of, as it changes.
    pub fn committed(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.committed)
    }

    fn last_purged(&self) -> Option<LogId> {
        *self.purged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs blocking file work off the control runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(LogStore) -> Result<T, AnyError> + Send + 'static,
    ) -> Result<T, AnyError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|e| AnyError::error(format!("the log's file work failed: {e}")))?
    }
}

/// Takes the log's lock file, or says who holds it.
fn lock(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| OpenError::Log {
            path: path.clone(),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        OpenError::Locked {
            path: path.clone(),
            source: e.into(),
        }
    })?;
    Ok(file)
}

fn decode_entry(epochs: &Epochs, index: u64, sealed: &[u8]) -> Result<Entry, AnyError> {
    let plain = epochs
        .open(index, sealed)
        .map_err(|e| AnyError::error(format!("entry {index} cannot be opened: {e}")))?;
    decode_carrier(&plain).map_err(|e| AnyError::error(format!("entry {index} cannot be decoded: {e}")))
}

/// `range` as the half-open `from..to` of indexes.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(index) => *index,
        Bound::Excluded(index) => index.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(index) => index.saturating_add(1),
        Bound::Excluded(index) => *index,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (from, to) = index_range(&range);
        let epochs = self.keys.read();
        let sealed = self
            .file()
            .read(from, to)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let mut entries = Vec::with_capacity(sealed.len());
        for (index, value) in &sealed {
            entries.push(decode_entry(&epochs, *index, value).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.last_purged(),
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |store| VOTE.write(&store.dir, &vote).map_err(|e| AnyError::new(&e)))
            .await
            .map_err(StorageIOError::write_vote)?;
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
        let vote: Option<Vote> = VOTE
            .read(&self.dir)
            .map_err(|e| StorageIOError::read_vote(AnyError::error(e)))?;
        Ok(vote.map(|vote| Vote {
            committed: false,
            ..vote
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced: losing the newest committed id only re-applies less
        // on restart.
        self.committed_file
            .write(committed.as_ref())
            .map_err(|e| StorageIOError::write(&e))?;
        self.committed
            .store(committed.map_or(0, |id| id.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed_file.read())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sealed = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            let bytes =
                postcard::to_stdvec(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            let value = self
                .keys
                .seal(entry.log_id.index, &bytes)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::error(e)))?;
            sealed.push((entry.log_id.index, value));
        }
        let file = {
            let mut entries = self.file();
            entries
                .append(&sealed)
                .map_err(|e| StorageIOError::write_logs(&e))?;
            entries.file()
        };
        if last.is_some() {
            self.set_last(last);
        }
        self.syncer.after(file, Waiter::Append(callback));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let file = {
            let mut entries = self.file();
            entries
                .truncate(log_id.index)
                .map_err(|e| StorageIOError::write_logs(&e))?;
            entries.file()
        };
        self.set_last(self.stored_last_log_id().map_err(StorageIOError::read_logs)?);
        self.syncer
            .sync(file)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |store| {
            // The purge point first, durably: entries must never be missing
            // below a purge point that a crash took back.
            PURGED.write(&store.dir, &log_id).map_err(|e| AnyError::new(&e))?;
            *store.purged.lock().unwrap_or_else(|e| e.into_inner()) = Some(log_id);
            store.forget_purged(log_id.index).map_err(AnyError::error)
        })
        .await
        .map_err(StorageIOError::write_logs)?;
        let last = self.last_log_id().max(Some(log_id));
        self.set_last(last);
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
    /// point's if it is later.
    fn stored_last_log_id(&self) -> Result<Option<LogId>, AnyError> {
        let epochs = self.keys.read();
        let last_entry = {
            let entries = self.file();
            match entries.last_index() {
                Some(last) => entries.read(last, last + 1).map_err(|e| AnyError::new(&e))?,
                None => Vec::new(),
            }
        };
        let last_entry = match last_entry.first() {
            Some((index, value)) => Some(decode_entry(&epochs, *index, value)?.log_id),
            None => None,
        };
        Ok(last_entry.max(self.last_purged()))
    }

    /// After the purge point moved to `index`: a new epoch; the entries
    /// after `index` sealed again under it into a new file, durably, and
    /// the old file deleted; then every older key deleted, and with them
    /// whatever the disk still keeps of the purged entries.
    fn forget_purged(&self, index: u64) -> Result<(), String> {
        self.keys.start_epoch()?;
        self.file()
            .rewrite(index.saturating_add(1), |at, sealed| self.keys.reseal(at, sealed))
            .map_err(|e| format!("cannot rewrite the log: {e}"))?;
        self.keys.forget_old_epochs()
    }
}
