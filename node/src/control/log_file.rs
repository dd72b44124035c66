//! The Raft log's entries on disk: one append-only file of framed records,
//! and the offsets of its records in memory (8 bytes an entry, nothing
//! else: the entries themselves are read back from the file, which the
//! kernel's page cache keeps warm). It replaced sled, whose memory under
//! churn did not stay bounded (README, *sled*).
//!
//! The file `raft-log/log.<generation>` starts with [`MAGIC`]; each record
//! is `length (u32 LE) ‖ crc32 (u32 LE) ‖ index (u64 LE) ‖ sealed entry`,
//! the checksum covering the length, the index and the entry. Records
//! follow each other by index, one past the last. An append writes its
//! batch in one `pwrite` at the end; a truncation cuts the file; a purge
//! [`rewrite`](LogFile::rewrite)s what remains into the next generation's
//! file (temporary name, fsync, rename) and deletes the old one, so the
//! file holds little more than the entries openraft keeps.
//!
//! Opening tells a write a crash cut short from damage: a record that is
//! incomplete or fails its checksum ends the log there if no intact record
//! follows it (an append is acknowledged only once fsynced, so nothing
//! acknowledged is dropped), and is refused as corruption if one does.
//! Durability (fsync) is the caller's: see `log_sync`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Starts every log file; the digits are its format's version.
pub const MAGIC: &[u8; 8] = b"RLBLOG01";
const HEADER: usize = 16;
const PREFIX: &str = "log.";
/// The unit a disk writes whole; a page lost in a crash is zeros.
const SECTOR: usize = 512;

/// Why the file could not be opened: unreadable, or damaged where a crash
/// cannot explain it.
#[derive(Debug)]
pub enum FileError {
    Io(PathBuf, io::Error),
    Corrupt(PathBuf, String),
}

/// The entries' file of one log, and where each record starts.
#[derive(Debug)]
pub struct LogFile {
    dir: PathBuf,
    generation: u64,
    file: Arc<File>,
    /// The index of the record at `offsets[0]`.
    first: u64,
    offsets: Vec<u64>,
    end: u64,
}

/// What opening found beyond the records it kept.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Bytes of an unfinished last write, cut off.
    pub torn_bytes: u64,
}

impl LogFile {
    /// Opens the newest generation's file in `dir`, creating the first
    /// when there is none; deletes older generations and temporary files
    /// a crash left behind.
    pub fn open(dir: &Path) -> Result<(LogFile, Recovered), FileError> {
        let io_error = |e| FileError::Io(dir.to_path_buf(), e);
        let mut generations = Vec::new();
        for item in fs::read_dir(dir).map_err(io_error)? {
            let item = item.map_err(io_error)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                fs::remove_file(item.path()).map_err(io_error)?;
            } else if let Some(generation) = name.strip_prefix(PREFIX) {
                let generation = u64::from_str_radix(generation, 16).map_err(|_| {
                    FileError::Corrupt(item.path(), "a log file's name must end in a hex number".into())
                })?;
                generations.push(generation);
            }
        }
        generations.sort_unstable();
        let Some(&newest) = generations.last() else {
            let file = create(dir, 1, &[]).map_err(io_error)?;
            return Ok((LogFile::empty(dir, 1, file), Recovered::default()));
        };
        for older in &generations[..generations.len() - 1] {
            fs::remove_file(path_of(dir, *older)).map_err(io_error)?;
        }
        let path = path_of(dir, newest);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| FileError::Io(path.clone(), e))?;
        let mut log = LogFile::empty(dir, newest, file);
        let recovered = log.scan().map_err(|e| match e {
            ScanError::Io(e) => FileError::Io(path.clone(), e),
            ScanError::Corrupt(reason) => FileError::Corrupt(path.clone(), reason),
        })?;
        Ok((log, recovered))
    }

    fn empty(dir: &Path, generation: u64, file: File) -> LogFile {
        LogFile {
            dir: dir.to_path_buf(),
            generation,
            file: Arc::new(file),
            first: 0,
            offsets: Vec::new(),
            end: MAGIC.len() as u64,
        }
    }

    /// Reads every record's place, checking magic, checksums and order;
    /// cuts a torn last write.
    fn scan(&mut self) -> Result<Recovered, ScanError> {
        let mut bytes = Vec::new();
        (&*self.file).read_to_end(&mut bytes)?;
        if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            return Err(ScanError::Corrupt(
                "it does not start like a raftlb log file".into(),
            ));
        }
        let mut at = MAGIC.len();
        while at < bytes.len() {
            let Some((index, len)) = frame_at(&bytes, at) else {
                return self.cut_torn_tail(&bytes, at);
            };
            if let Some(last) = self.last_index()
                && index != last + 1
            {
                return Err(ScanError::Corrupt(format!(
                    "entry {index} follows entry {last} (at byte {at}): the log has a hole"
                )));
            }
            self.push(index, at as u64);
            at += HEADER + len;
        }
        self.end = at as u64;
        Ok(Recovered::default())
    }

    /// The record at `at` is damaged. A crash mid-write leaves a record
    /// the file's end cuts short, or pages the kernel never wrote, which
    /// read back as zeros: such a tail was never acknowledged (an append
    /// is only once fsynced) and is cut off. Damage of any other shape is
    /// corruption, refused (etcd's WAL draws the same line).
    fn cut_torn_tail(&mut self, bytes: &[u8], at: usize) -> Result<Recovered, ScanError> {
        let tail = &bytes[at..];
        let cut_short = frame_len(tail).is_none_or(|len| len > tail.len());
        let zero_sector = (at.next_multiple_of(SECTOR)..bytes.len())
            .step_by(SECTOR)
            .any(|from| {
                bytes
                    .get(from..from + SECTOR)
                    .is_some_and(|s| s.iter().all(|b| *b == 0))
            });
        let all_zero = tail.iter().all(|b| *b == 0);
        if !(cut_short || zero_sector || all_zero) {
            let which = self.last_index().map_or("the first entry".to_string(), |last| {
                format!("entry {}", last + 1)
            });
            return Err(ScanError::Corrupt(format!(
                "the record of {which} (at byte {at}) fails its checksum"
            )));
        }
        self.file.set_len(at as u64)?;
        self.end = at as u64;
        Ok(Recovered {
            torn_bytes: tail.len() as u64,
        })
    }

    fn push(&mut self, index: u64, offset: u64) {
        if self.offsets.is_empty() {
            self.first = index;
        }
        self.offsets.push(offset);
    }

    /// The first entry's index, if the log holds any.
    pub fn first_index(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then_some(self.first)
    }

    pub fn last_index(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }

    /// The file being written, for fsync.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Appends sealed entries `(index, bytes)`, each one past the last, in
    /// one write; not yet durable.
    pub fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut next = self.last_index().map(|last| last + 1);
        let mut buffer = Vec::with_capacity(entries.iter().map(|(_, e)| HEADER + e.len()).sum());
        for (index, sealed) in entries {
            if next.is_some_and(|next| next != *index) {
                return Err(io::Error::other(format!(
                    "entry {index} cannot follow entry {}: the log would have a hole",
                    self.last_index().unwrap_or_default()
                )));
            }
            next = Some(index + 1);
            encode_frame(&mut buffer, *index, sealed)?;
        }
        self.file.write_all_at(&buffer, self.end)?;
        let mut at = self.end;
        for (index, sealed) in entries {
            self.push(*index, at);
            at += (HEADER + sealed.len()) as u64;
        }
        self.end = at;
        Ok(())
    }

    /// Removes the entries from `index` on (none if it is past the last).
    pub fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some(last) = self.last_index() else {
            return Ok(());
        };
        if index > last {
            return Ok(());
        }
        let keep = index.saturating_sub(self.first) as usize;
        let cut = self.offsets.get(keep).copied().unwrap_or(self.end);
        self.file.set_len(cut)?;
        self.offsets.truncate(keep);
        self.end = cut;
        Ok(())
    }

    /// The sealed entries with indexes in `from..to` that the log holds.
    pub fn read(&self, from: u64, to: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let (Some(first), Some(last)) = (self.first_index(), self.last_index()) else {
            return Ok(Vec::new());
        };
        let (from, to) = (from.max(first), to.min(last + 1));
        if from >= to {
            return Ok(Vec::new());
        }
        let start = self.offsets[(from - first) as usize];
        let stop = self
            .offsets
            .get((to - first) as usize)
            .copied()
            .unwrap_or(self.end);
        let mut slab = vec![0u8; (stop - start) as usize];
        self.file.read_exact_at(&mut slab, start)?;
        let mut entries = Vec::with_capacity((to - from) as usize);
        let mut at = 0;
        while at < slab.len() {
            let (index, len) = frame_at(&slab, at).ok_or_else(|| {
                io::Error::other(format!(
                    "the record at byte {} of {} fails its checksum",
                    start + at as u64,
                    path_of(&self.dir, self.generation).display()
                ))
            })?;
            entries.push((index, slab[at + HEADER..at + HEADER + len].to_vec()));
            at += HEADER + len;
        }
        Ok(entries)
    }

    /// Replaces the file with the next generation's, holding the entries
    /// from `keep_from` on, each passed through `transform` (sealing them
    /// again); durable, and the old file deleted, when it returns.
    pub fn rewrite(
        &mut self,
        keep_from: u64,
        transform: impl Fn(u64, &[u8]) -> Result<Vec<u8>, String>,
    ) -> io::Result<()> {
        let kept = self.read(keep_from, u64::MAX)?;
        let mut body = Vec::new();
        let mut offsets = Vec::with_capacity(kept.len());
        for (index, sealed) in &kept {
            offsets.push((MAGIC.len() + body.len()) as u64);
            encode_frame(
                &mut body,
                *index,
                &transform(*index, sealed).map_err(io::Error::other)?,
            )?;
        }
        let generation = self.generation + 1;
        let file = create(&self.dir, generation, &body)?;
        let old = path_of(&self.dir, self.generation);
        self.generation = generation;
        self.file = Arc::new(file);
        self.first = kept.first().map_or(0, |(index, _)| *index);
        self.offsets = offsets;
        self.end = (MAGIC.len() + body.len()) as u64;
        fs::remove_file(old)?;
        sync_dir(&self.dir)
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            FileError::Corrupt(path, reason) => write!(f, "{} is corrupt: {reason}", path.display()),
        }
    }
}

enum ScanError {
    Io(io::Error),
    Corrupt(String),
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        ScanError::Io(e)
    }
}

fn path_of(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{generation:016x}"))
}

/// Writes generation `generation`'s file whole (magic, then `body`),
/// durably: temporary name, fsync, rename, fsync of the directory.
fn create(dir: &Path, generation: u64, body: &[u8]) -> io::Result<File> {
    let path = path_of(dir, generation);
    let temporary = dir.join(format!("{PREFIX}{generation:016x}.tmp"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all_at(MAGIC, 0)?;
    file.write_all_at(body, MAGIC.len() as u64)?;
    file.sync_all()?;
    fs::rename(&temporary, &path)?;
    sync_dir(dir)?;
    Ok(file)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn encode_frame(buffer: &mut Vec<u8>, index: u64, sealed: &[u8]) -> io::Result<()> {
    let len = u32::try_from(sealed.len()).map_err(|_| io::Error::other("an entry of 4 GiB or more"))?;
    let start = buffer.len();
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(&index.to_le_bytes());
    buffer.extend_from_slice(sealed);
    let crc = checksum(&buffer[start..]);
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The whole length a record's header claims, if the header is there.
fn frame_len(tail: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(tail.get(0..4)?.try_into().ok()?) as usize;
    HEADER.checked_add(len)
}

/// The index and entry length of an intact record starting at `at`.
fn frame_at(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let index = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let record = bytes.get(at..at.checked_add(HEADER)?.checked_add(len)?)?;
    (checksum(record) == crc).then_some((index, len))
}

/// crc32 of a record with its checksum field read as zero.
fn checksum(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[0..4]);
    hasher.update(&[0; 4]);
    hasher.update(&record[8..]);
    hasher.finalize()
}

#[cfg(test)]
#[path = "log_file_tests.rs"]
mod tests;
