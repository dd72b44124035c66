//! The Raft log's small facts beside its entries, one file each in
//! `raft-log/`: the vote (`vote`), the purge point (`purged`) and the last
//! committed log id (`committed`).
//!
//! The vote and the purge point are replaced whole and durably (temporary
//! file, fsync, rename, fsync of the directory): after a crash a reader
//! finds the old value or the new, never a mixture. Each starts with its
//! own magic and holds postcard bytes and their crc32. The committed id is
//! written far more often and is only a lower bound (losing the newest
//! one re-applies less on restart), so it is overwritten in place without
//! fsync; a torn copy fails its checksum and reads as "none known".

use super::log_file::sync_dir;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const VOTE: Fact = Fact {
    file: "vote",
    magic: b"RLBVOTE1",
};
pub const PURGED: Fact = Fact {
    file: "purged",
    magic: b"RLBPURG1",
};
const COMMITTED_FILE: &str = "committed";
/// The committed id's slot: crc32, length, postcard bytes, zeros.
const COMMITTED_SLOT: usize = 64;

/// A fact kept in a file of its own, replaced whole.
#[derive(Debug, Clone, Copy)]
pub struct Fact {
    file: &'static str,
    magic: &'static [u8; 8],
}

impl Fact {
    pub fn path(self, dir: &Path) -> PathBuf {
        dir.join(self.file)
    }

    /// The stored value; `None` if the file does not exist, an error
    /// saying why if it exists and cannot be read whole.
    pub fn read<T: DeserializeOwned>(self, dir: &Path) -> Result<Option<T>, String> {
        let bytes = match std::fs::read(self.path(dir)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("the {} cannot be read: {e}", self.file)),
        };
        let body = bytes
            .strip_prefix(self.magic.as_slice())
            .ok_or_else(|| format!("the {} file does not start like one", self.file))?;
        let checked = unchecksummed(body).ok_or_else(|| format!("the {} fails its checksum", self.file))?;
        postcard::from_bytes(checked)
            .map(Some)
            .map_err(|e| format!("the {} cannot be decoded: {e}", self.file))
    }

    /// Replaces the stored value, durably.
    pub fn write<T: Serialize>(self, dir: &Path, value: &T) -> io::Result<()> {
        let mut bytes = self.magic.to_vec();
        bytes.extend(checksummed(
            &postcard::to_stdvec(value).map_err(io::Error::other)?,
        ));
        replace_durably(&self.path(dir), &bytes)
    }
}

/// Replaces the file at `path` with `bytes` (mode 0600), durably: a
/// temporary file beside it, fsync, rename, fsync of the directory.
pub fn replace_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// `crc32 (u32 LE) ‖ bytes`.
fn checksummed(bytes: &[u8]) -> Vec<u8> {
    let mut out = crc32fast::hash(bytes).to_le_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

fn unchecksummed(stored: &[u8]) -> Option<&[u8]> {
    let (crc, bytes) = stored.split_at_checked(4)?;
    (u32::from_le_bytes(crc.try_into().ok()?) == crc32fast::hash(bytes)).then_some(bytes)
}

/// The committed log id's file, overwritten in place.
#[derive(Debug)]
pub struct CommittedFile {
    file: File,
}

impl CommittedFile {
    pub fn open(dir: &Path) -> io::Result<CommittedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(COMMITTED_FILE))?;
        Ok(CommittedFile { file })
    }

    /// The last value written, if it survived whole.
    pub fn read<T: DeserializeOwned>(&self) -> Option<T> {
        let mut slot = [0u8; COMMITTED_SLOT];
        let read = self.file.read_at(&mut slot, 0).ok()?;
        let checked = unchecksummed(slot.get(..read)?)?;
        let (&len, body) = checked.split_first()?;
        postcard::from_bytes(body.get(..usize::from(len))?).ok()
    }

    /// Overwrites the value (`None`: none known), without waiting for
    /// the disk.
    pub fn write<T: Serialize>(&self, value: Option<&T>) -> io::Result<()> {
        let body = match value {
            Some(value) => postcard::to_stdvec(value).map_err(io::Error::other)?,
            None => Vec::new(),
        };
        let mut plain = vec![0u8; COMMITTED_SLOT - 4];
        let len = u8::try_from(body.len())
            .ok()
            .filter(|len| usize::from(*len) < plain.len())
            .ok_or_else(|| io::Error::other("a committed id too long for its slot"))?;
        plain[0] = len;
        plain[1..=body.len()].copy_from_slice(&body);
        self.file.write_all_at(&checksummed(&plain), 0)
    }
}
