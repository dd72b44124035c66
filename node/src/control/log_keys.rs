//! Sealing the Raft log at rest, so that purging it forgets it.
//!
//! A purge deletes the log file the purged entries were in, but a deleted
//! file's blocks stay on the disk until reused (and sled, which held the
//! log until data-dir format 4, kept a removed value in its segment files),
//! so a purged entry (a certificate's private key, say) could linger
//! where the data dir's disk is read. Every entry is therefore stored
//! sealed (ChaCha20-Poly1305, a random nonce per entry, the log index as
//! associated data) under the key of an *epoch*. Each purge starts a new
//! epoch: the entries that remain are sealed again under its key, and then
//! every older key is deleted from the key file (`raft.keys`, rewritten
//! whole: temporary file, fsync, rename). What the purge removed is
//! unreadable from then on, wherever its bytes are left (crypto-shredding).
//! The key file sits beside the log in the data dir (mode 0600): this does
//! not protect a live data dir from its reader, it makes purging mean
//! forgetting.
//!
//! A sealed value is `epoch (8 bytes, big-endian) ‖ nonce (12) ‖
//! ciphertext ‖ tag (16)`.

use super::log_meta::replace_durably;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

const EPOCH_LEN: usize = 8;
const HEADER_LEN: usize = EPOCH_LEN + NONCE_LEN;
/// Starts the key file; the digit is its format's version.
const MAGIC: &[u8; 8] = b"RLBKEYS1";

/// The key file as stored (after [`MAGIC`]).
#[derive(Serialize, Deserialize)]
struct Stored {
    current: u64,
    keys: Vec<(u64, [u8; 32])>,
}

/// The keys of the epochs whose entries may still be in the log.
pub struct Epochs {
    current: u64,
    raw: BTreeMap<u64, [u8; 32]>,
    keys: BTreeMap<u64, LessSafeKey>,
}

impl std::fmt::Debug for Epochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epochs")
            .field("current", &self.current)
            .field("kept", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Epochs {
    fn from_stored(stored: Stored) -> Result<Epochs, String> {
        let mut epochs = Epochs {
            current: stored.current,
            raw: BTreeMap::new(),
            keys: BTreeMap::new(),
        };
        for (epoch, key) in stored.keys {
            epochs.add(epoch, key)?;
        }
        if !epochs.keys.contains_key(&epochs.current) {
            return Err(format!("the current epoch {} has no key", epochs.current));
        }
        Ok(epochs)
    }

    fn add(&mut self, epoch: u64, key: [u8; 32]) -> Result<(), String> {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| "a key of the wrong size".to_string())?;
        self.keys.insert(epoch, LessSafeKey::new(unbound));
        self.raw.insert(epoch, key);
        Ok(())
    }

    /// The plain bytes of entry `index`, sealed under any epoch still kept.
    pub fn open(&self, index: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < HEADER_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(format!("a sealed value of {} bytes is too short", sealed.len()));
        }
        let (header, body) = sealed.split_at(HEADER_LEN);
        let (epoch, nonce) = header.split_at(EPOCH_LEN);
        let epoch = u64::from_be_bytes(epoch.try_into().map_err(|_| "no epoch".to_string())?);
        let key = self.keys.get(&epoch).ok_or_else(|| {
            format!("it is sealed under epoch {epoch}, whose key is gone (purged, or a lost key file)")
        })?;
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| "a nonce of the wrong size".to_string())?;
        let mut plain = body.to_vec();
        let opened_len = key
            .open_in_place(nonce, Aad::from(index.to_be_bytes()), &mut plain)
            .map_err(|_| "it fails authentication (altered, or stored under another index)".to_string())?
            .len();
        plain.truncate(opened_len);
        Ok(plain)
    }
}

/// The log's sealing keys and their file.
pub struct LogKeys {
    path: PathBuf,
    epochs: RwLock<Epochs>,
    random: SystemRandom,
}

impl std::fmt::Debug for LogKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKeys")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LogKeys {
    /// Opens the key file at `path`, creating it (with a first epoch) when
    /// it does not exist and `log_is_empty`; a log without its key file
    /// cannot be read, which is said rather than guessed around.
    pub fn open(path: &Path, log_is_empty: bool) -> Result<LogKeys, String> {
        let random = SystemRandom::new();
        let epochs = match std::fs::read(path) {
            Ok(bytes) => {
                let body = bytes
                    .strip_prefix(MAGIC.as_slice())
                    .ok_or_else(|| "it does not start like a raftlb key file".to_string())?;
                let stored: Stored =
                    postcard::from_bytes(body).map_err(|e| format!("it cannot be decoded: {e}"))?;
                Epochs::from_stored(stored)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && log_is_empty => {
                let mut epochs = Epochs {
                    current: 1,
                    raw: BTreeMap::new(),
                    keys: BTreeMap::new(),
                };
                epochs.add(1, new_key(&random)?)?;
                write(path, &epochs).map_err(|e| format!("cannot write it: {e}"))?;
                epochs
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(
                    "it is missing, so the log beside it cannot be read (a data dir of a raftlb \
                            older than sealed logs, or a lost file): remove the data dir to start this node \
                            afresh; it catches up from the cluster"
                        .to_string(),
                );
            }
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        Ok(LogKeys {
            path: path.to_path_buf(),
            epochs: RwLock::new(epochs),
            random,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys, for reading entries: hold the guard across reading a
    /// value and opening it, so no purge deletes its key in between.
    pub fn read(&self) -> RwLockReadGuard<'_, Epochs> {
        self.epochs.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `plain`, sealed for index `index` under the current epoch.
    pub fn seal(&self, index: u64, plain: &[u8]) -> Result<Vec<u8>, String> {
        self.seal_with(&self.read(), index, plain)
    }

    /// Entry `index`, sealed under any kept epoch, sealed again under the
    /// current one.
    pub fn reseal(&self, index: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let epochs = self.read();
        let plain = epochs.open(index, sealed)?;
        self.seal_with(&epochs, index, &plain)
    }

    fn seal_with(&self, epochs: &Epochs, index: u64, plain: &[u8]) -> Result<Vec<u8>, String> {
        let key = epochs
            .keys
            .get(&epochs.current)
            .ok_or_else(|| "the current epoch has no key".to_string())?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(index.to_be_bytes()),
            &mut body,
        )
        .map_err(|_| "sealing failed".to_string())?;
        let mut sealed = Vec::with_capacity(HEADER_LEN + body.len());
        sealed.extend_from_slice(&epochs.current.to_be_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Starts a new epoch: its key is durably in the file, beside the
    /// others, before anything is sealed under it.
    pub fn start_epoch(&self) -> Result<(), String> {
        let key = new_key(&self.random)?;
        let mut epochs = self.epochs.write().unwrap_or_else(|e| e.into_inner());
        let next = epochs.current + 1;
        epochs.add(next, key)?;
        epochs.current = next;
        write(&self.path, &epochs).map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// Deletes every key but the current epoch's, from memory and from the
    /// file: what was sealed under them can no longer be read.
    pub fn forget_old_epochs(&self) -> Result<(), String> {
        let mut epochs = self.epochs.write().unwrap_or_else(|e| e.into_inner());
        let current = epochs.current;
        epochs.keys.retain(|epoch, _| *epoch == current);
        epochs.raw.retain(|epoch, _| *epoch == current);
        write(&self.path, &epochs).map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

fn new_key(random: &SystemRandom) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    random
        .fill(&mut key)
        .map_err(|_| "no randomness for a log key".to_string())?;
    Ok(key)
}

/// Replaces the key file with `epochs`, durably.
fn write(path: &Path, epochs: &Epochs) -> std::io::Result<()> {
    let stored = Stored {
        current: epochs.current,
        keys: epochs.raw.iter().map(|(epoch, key)| (*epoch, *key)).collect(),
    };
    let mut bytes = MAGIC.to_vec();
    bytes.extend(postcard::to_stdvec(&stored).map_err(std::io::Error::other)?);
    replace_durably(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_until_their_epoch_is_forgotten() {
        let dir = std::env::temp_dir().join(format!("raftlb-log-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("raft.keys");
        assert!(LogKeys::open(&path, false).unwrap_err().contains("is missing"));
        let keys = LogKeys::open(&path, true).unwrap();
        let first = keys.seal(7, b"the private key").unwrap();
        assert!(!first.windows(7).any(|w| w == b"private"), "sealed");
        assert_eq!(keys.read().open(7, &first).unwrap(), b"the private key");
        assert!(
            keys.read()
                .open(8, &first)
                .unwrap_err()
                .contains("authentication")
        );

        keys.start_epoch().unwrap();
        let second = keys.seal(8, b"later").unwrap();
        let reopened = LogKeys::open(&path, false).unwrap();
        assert_eq!(reopened.read().open(7, &first).unwrap(), b"the private key");
        assert_eq!(reopened.read().open(8, &second).unwrap(), b"later");

        keys.forget_old_epochs().unwrap();
        assert!(keys.read().open(7, &first).unwrap_err().contains("key is gone"));
        let reopened = LogKeys::open(&path, false).unwrap();
        assert!(reopened.read().open(7, &first).is_err(), "forgotten on disk too");
        assert_eq!(reopened.read().open(8, &second).unwrap(), b"later");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
