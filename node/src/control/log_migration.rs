//! Moving a Raft log out of sled: data dirs of formats 1 to 3 hold it in
//! `DATA_DIR/raft/` (a sled database), format 4 in raftlb's own files
//! (`DATA_DIR/raft-log/`, see `log_store`).
//!
//! [`from_sled`] copies the vote, the purge point, the committed id and
//! every entry (still sealed: the key file is shared) into
//! `raft-log.moving/`, fsyncs it and renames it to `raft-log/`. Until the
//! data dir's identity records format 4 (after the log and the snapshot
//! opened, `Claimed::upgrade`), sled's copy stays the true one: a crash in
//! between leaves a format-3 dir that an older binary still reads whole,
//! and that this binary moves again from the start. Once the identity says
//! format 4, [`remove_sled`] deletes sled's copy.

use super::log_file::{LogFile, sync_dir};
use super::log_meta::{CommittedFile, PURGED, VOTE};
use super::log_store::{LOG_DIR, OpenError};
use super::types::{LogId, Vote};
use std::path::Path;

/// Where formats 1 to 3 keep the log, in a data dir.
const SLED_DIR: &str = "raft";
/// The first data-dir format whose log is in raftlb's own files.
pub const OWN_FILES_SINCE: u16 = 4;
/// Entries copied at a time.
const CHUNK: usize = 4096;

/// Moves the log of a data dir of `format` out of sled, if it is there.
pub fn from_sled(data_dir: &Path, format: u16) -> Result<(), OpenError> {
    let sled_dir = data_dir.join(SLED_DIR);
    if format >= OWN_FILES_SINCE || !sled_dir.exists() {
        return Ok(());
    }
    let failed = |reason: String| OpenError::Migrate {
        path: sled_dir.clone(),
        reason,
    };
    let staging = data_dir.join(format!("{LOG_DIR}.moving"));
    let target = data_dir.join(LOG_DIR);
    for stale in [&staging, &target] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .map_err(|e| failed(format!("cannot remove {}: {e}", stale.display())))?;
        }
    }
    std::fs::create_dir_all(&staging)
        .map_err(|e| failed(format!("cannot create {}: {e}", staging.display())))?;
    let entries = copy(&sled_dir, &staging).map_err(failed)?;
    std::fs::rename(&staging, &target)
        .and_then(|()| sync_dir(data_dir))
        .map_err(|e| {
            failed(format!(
                "cannot rename {} to {}: {e}",
                staging.display(),
                target.display()
            ))
        })?;
    tracing::info!(
        path = %sled_dir.display(),
        entries,
        "moved the Raft log out of sled into raftlb's own files"
    );
    Ok(())
}

/// Copies sled's log at `sled_dir` into the empty directory `to`,
/// durably; returns how many entries it copied.
fn copy(sled_dir: &Path, to: &Path) -> Result<u64, String> {
    let db = sled::Config::new()
        .path(sled_dir)
        .open()
        .map_err(|e| format!("sled cannot open it: {e}"))?;
    let tree = |name: &str| {
        db.open_tree(name)
            .map_err(|e| format!("sled cannot open its {name} tree: {e}"))
    };
    let (logs, meta) = (tree("logs")?, tree("meta")?);
    let fact = |key: &str| -> Result<Option<sled::IVec>, String> {
        meta.get(key).map_err(|e| format!("cannot read the {key}: {e}"))
    };
    let decode_failed = |key: &str, e: postcard::Error| format!("the {key} cannot be decoded: {e}");
    if let Some(bytes) = fact("vote")? {
        let vote: Vote = postcard::from_bytes(&bytes).map_err(|e| decode_failed("vote", e))?;
        VOTE.write(to, &vote)
            .map_err(|e| format!("cannot write the vote: {e}"))?;
    }
    if let Some(bytes) = fact("last_purged")? {
        let purged: LogId = postcard::from_bytes(&bytes).map_err(|e| decode_failed("purge point", e))?;
        PURGED
            .write(to, &purged)
            .map_err(|e| format!("cannot write the purge point: {e}"))?;
    }
    if let Some(bytes) = fact("committed")? {
        let committed: LogId = postcard::from_bytes(&bytes).map_err(|e| decode_failed("committed id", e))?;
        CommittedFile::open(to)
            .and_then(|file| file.write(Some(&committed)))
            .map_err(|e| format!("cannot write the committed id: {e}"))?;
    }
    let (mut file, _) = LogFile::open(to).map_err(|e| format!("cannot create the new log: {e}"))?;
    let mut copied = 0;
    let mut chunk = Vec::with_capacity(CHUNK);
    for item in logs.iter() {
        let (key, value) = item.map_err(|e| format!("cannot read an entry: {e}"))?;
        let index = <[u8; 8]>::try_from(key.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| format!("a key of {} bytes is not a log index", key.len()))?;
        chunk.push((index, value.to_vec()));
        if chunk.len() == CHUNK {
            file.append(&chunk)
                .map_err(|e| format!("cannot copy entries: {e}"))?;
            copied += chunk.len() as u64;
            chunk.clear();
        }
    }
    file.append(&chunk)
        .map_err(|e| format!("cannot copy entries: {e}"))?;
    copied += chunk.len() as u64;
    file.file()
        .sync_all()
        .map_err(|e| format!("cannot sync the new log: {e}"))?;
    Ok(copied)
}

/// Deletes sled's copy of the log once the data dir's identity records a
/// format whose log is in raftlb's own files.
pub fn remove_sled(data_dir: &Path) -> Result<(), OpenError> {
    let sled_dir = data_dir.join(SLED_DIR);
    if !sled_dir.exists() {
        return Ok(());
    }
    std::fs::remove_dir_all(&sled_dir).map_err(|e| OpenError::Migrate {
        path: sled_dir.clone(),
        reason: format!("cannot remove sled's copy after the move: {e}"),
    })?;
    tracing::info!(path = %sled_dir.display(), "removed sled's copy of the Raft log");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::log_keys::LogKeys;
    use crate::control::log_store::{KEYS_FILE, LogStore};
    use crate::control::types::Entry;
    use openraft::{CommittedLeaderId, RaftLogReader};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(2, 1), index)
    }

    /// Writes a log as formats 1 to 3 did: sealed entries keyed by their
    /// big-endian index, the facts in a meta tree.
    fn write_sled_log(data_dir: &Path, indexes: std::ops::RangeInclusive<u64>) {
        let keys = LogKeys::open(&data_dir.join(KEYS_FILE), true).expect("keys");
        let db = sled::open(data_dir.join(SLED_DIR)).expect("sled");
        let logs = db.open_tree("logs").expect("logs");
        let meta = db.open_tree("meta").expect("meta");
        for index in indexes {
            let entry = Entry {
                log_id: log_id(index),
                payload: openraft::EntryPayload::Blank,
            };
            let sealed = keys
                .seal(index, &postcard::to_stdvec(&entry).expect("encode"))
                .expect("seal");
            logs.insert(index.to_be_bytes(), sealed).expect("insert");
        }
        let vote = Vote::new(2, 1);
        meta.insert("vote", postcard::to_stdvec(&vote).expect("vote"))
            .expect("vote");
        meta.insert("last_purged", postcard::to_stdvec(&log_id(9)).expect("purged"))
            .expect("purged");
        meta.insert("committed", postcard::to_stdvec(&log_id(15)).expect("committed"))
            .expect("committed");
        db.flush().expect("flush");
    }

    #[tokio::test]
    async fn a_sled_log_moves_whole_and_a_stale_copy_is_replaced() {
        let data_dir = std::env::temp_dir().join(format!("raftlb-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("dir");
        write_sled_log(&data_dir, 10..=20);
        // A copy left by an interrupted move, older than sled's.
        std::fs::create_dir_all(data_dir.join(LOG_DIR)).expect("stale");
        std::fs::write(data_dir.join(LOG_DIR).join("vote"), b"stale").expect("stale");

        from_sled(&data_dir, 3).expect("move");
        let mut store = LogStore::open(&data_dir).expect("open the moved log");
        use openraft::storage::RaftLogStorage;
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(9)));
        assert_eq!(state.last_log_id, Some(log_id(20)));
        assert_eq!(
            store.read_vote().await.expect("vote").map(|v| v.leader_id),
            Some(Vote::new(2, 1).leader_id)
        );
        assert_eq!(store.committed_index(), 15);
        let entries = store.try_get_log_entries(10..=20).await.expect("entries");
        assert_eq!(
            entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (10..=20).collect::<Vec<_>>()
        );
        drop(store);

        // Format 4 leaves it alone; the sled copy goes once asked.
        from_sled(&data_dir, OWN_FILES_SINCE).expect("no move");
        remove_sled(&data_dir).expect("remove");
        assert!(!data_dir.join(SLED_DIR).exists());
        assert!(LogStore::open(&data_dir).is_ok());
        let _ = std::fs::remove_dir_all(&data_dir);
    }
}
