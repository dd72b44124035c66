//! The node's data directory and the identity file that says whose it is.
//!
//! `DATA_DIR/raftlb.identity` records the cluster id and node id the
//! directory was created for, and the format version its files are written
//! in (`format=N`; no such line: format 1, written before versions). A node
//! refuses, without touching anything, a directory made for another cluster
//! or node, a non-empty directory that has no identity file (someone else's
//! files, or a wrong path), and a directory of a format newer than its
//! binary reads. A directory of an older format is upgraded in place, one
//! direction only: once its log and snapshot have opened, the identity
//! records the binary's format ([`Claimed::upgrade`]), and from then on an
//! older binary refuses it.
//! `DATA_DIR/raftlb.lock` is held (`flock`) by the one process using the
//! directory ([`lock`]); an in-place upgrade hands it on ([`DirLock::adopt`]).

use raftlb_config::format;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const IDENTITY_FILE: &str = "raftlb.identity";
const LOCK_FILE: &str = "raftlb.lock";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot use data dir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "data dir {path} belongs to node {found_node} of cluster \"{found_cluster}\", but this node is node {node} of cluster \"{cluster}\"; refusing to use it (nothing was changed). Point [node] data_dir elsewhere, or remove the directory to start this node afresh"
    )]
    Foreign {
        path: PathBuf,
        found_cluster: String,
        found_node: u64,
        cluster: String,
        node: u64,
    },
    #[error(
        "data dir {path} is not empty and has no {IDENTITY_FILE}: it is not a raftlb data dir; refusing to use it (nothing was changed)"
    )]
    NotOurs { path: PathBuf },
    #[error(
        "data dir {path} is in use by another raftlb process ({holder}, per {LOCK_FILE}); refusing to start a second one on it. Stop that one first, or replace it without a gap with `raftlb run --upgrade` (or SIGUSR2 to it)"
    )]
    Locked { path: PathBuf, holder: String },
    #[error(
        "data dir {path}: {IDENTITY_FILE} is corrupt ({reason}); refusing to use it (nothing was changed)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "data dir {path} is of format {found}, written by a newer raftlb; this binary reads data dirs of formats {oldest} to {current}; refusing to use it (nothing was changed). Run the newer raftlb, or move the directory aside to let this node catch up from the cluster"
    )]
    Newer {
        path: PathBuf,
        found: u16,
        oldest: u16,
        current: u16,
    },
    #[error(
        "data dir {path} is of format {found}, older than this binary reads (formats {oldest} to {current}); refusing to use it (nothing was changed). Upgrade it first with a raftlb that reads format {found}, one version at a time"
    )]
    Older {
        path: PathBuf,
        found: u16,
        oldest: u16,
        current: u16,
    },
}

/// A data dir this node may use, and the format it was found in.
#[derive(Debug)]
pub struct Claimed {
    path: PathBuf,
    cluster: String,
    node: u64,
    /// The format its files were written in when it was claimed.
    pub format: u16,
}

impl Claimed {
    /// Records this binary's format, once the directory's files have been
    /// read without error (a directory that fails to open keeps its
    /// format, so the binary that wrote it can still read it).
    pub fn upgrade(&self) -> Result<(), DataDirError> {
        if self.format >= format::CURRENT {
            return Ok(());
        }
        write_identity(&self.path.join(IDENTITY_FILE), &self.cluster, self.node).map_err(|source| {
            DataDirError::Io {
                path: self.path.clone(),
                source,
            }
        })?;
        tracing::info!(
            path = %self.path.display(),
            from = self.format,
            to = format::CURRENT,
            "upgraded the data dir's format in place"
        );
        Ok(())
    }
}

/// Checks that `path` is this node's data dir, of a format this binary
/// reads, creating it (with its identity file) if it does not exist or is
/// empty.
pub fn claim(path: &Path, cluster: &str, node: u64) -> Result<Claimed, DataDirError> {
    let io = |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(path).map_err(io)?;
    // The log and snapshots hold TLS private keys: the owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let identity = path.join(IDENTITY_FILE);
    match fs::read_to_string(&identity) {
        Ok(text) => {
            let (found_cluster, found_node, found_format) =
                parse(&text).map_err(|reason| DataDirError::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                })?;
            if found_cluster != cluster || found_node != node {
                return Err(DataDirError::Foreign {
                    path: path.to_path_buf(),
                    found_cluster,
                    found_node,
                    cluster: cluster.to_string(),
                    node,
                });
            }
            if found_format < format::OLDEST {
                return Err(DataDirError::Older {
                    path: path.to_path_buf(),
                    found: found_format,
                    oldest: format::OLDEST,
                    current: format::CURRENT,
                });
            }
            if found_format > format::CURRENT {
                return Err(DataDirError::Newer {
                    path: path.to_path_buf(),
                    found: found_format,
                    oldest: format::OLDEST,
                    current: format::CURRENT,
                });
            }
            Ok(Claimed {
                path: path.to_path_buf(),
                cluster: cluster.to_string(),
                node,
                format: found_format,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut entries = fs::read_dir(path).map_err(io)?;
            if entries.any(|entry| entry.map_or(true, |e| e.file_name() != LOCK_FILE)) {
                return Err(DataDirError::NotOurs {
                    path: path.to_path_buf(),
                });
            }
            write_identity(&identity, cluster, node).map_err(io)?;
            Ok(Claimed {
                path: path.to_path_buf(),
                cluster: cluster.to_string(),
                node,
                format: format::CURRENT,
            })
        }
        Err(e) => Err(io(e)),
    }
}

/// The data dir's lock, held for as long as this value (or a duplicate of
/// its descriptor handed to a successor) lives.
#[derive(Debug)]
pub struct DirLock {
    file: fs::File,
}

/// Takes `path`'s lock (creating the directory and the lock file if need
/// be), or says which process holds it.
pub fn lock(path: &Path) -> Result<DirLock, DataDirError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(path).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io)?;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path.join(LOCK_FILE))
        .map_err(io)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = fs::read_to_string(path.join(LOCK_FILE)).unwrap_or_default();
            let holder = match holder.trim() {
                "" => "pid unknown".to_string(),
                text => text.replace('=', " "),
            };
            return Err(DataDirError::Locked {
                path: path.to_path_buf(),
                holder,
            });
        }
        Err(e) => return Err(io(e.into())),
    }
    let lock = DirLock { file };
    lock.record_pid().map_err(io)?;
    Ok(lock)
}

impl DirLock {
    /// Holds the lock a predecessor handed over, checked to be `path`'s.
    pub fn adopt(path: &Path, fd: std::os::fd::OwnedFd) -> Result<DirLock, DataDirError> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| DataDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = fs::File::from(fd);
        let (ours, handed) = (
            fs::metadata(path.join(LOCK_FILE)).map_err(io)?,
            file.metadata().map_err(io)?,
        );
        if (ours.dev(), ours.ino()) != (handed.dev(), handed.ino()) {
            return Err(io(std::io::Error::other(format!(
                "the lock handed over is not this data dir's {LOCK_FILE}"
            ))));
        }
        // The same open file, so the same lock: this cannot block.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| io(e.into()))?;
        let lock = DirLock { file };
        lock.record_pid().map_err(io)?;
        Ok(lock)
    }

    /// The lock file's descriptor, to hand to a successor.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.file)
    }

    /// Says in the lock file which process holds it (for the refusal).
    fn record_pid(&self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.set_len(0)?;
        self.file
            .write_all_at(format!("pid={}\n", std::process::id()).as_bytes(), 0)
    }
}

/// The cluster, node and format an identity file records.
fn parse(text: &str) -> Result<(String, u64, u16), String> {
    let mut cluster = None;
    let mut node = None;
    let mut format = 1;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("cluster", value)) => cluster = Some(value.to_string()),
            Some(("node", value)) => node = value.parse::<u64>().ok(),
            Some(("format", value)) => {
                format = value
                    .parse::<u16>()
                    .map_err(|_| format!("format \"{value}\" is not a version number"))?;
            }
            _ => return Err(format!("unexpected line \"{line}\"")),
        }
    }
    let (cluster, node) = cluster
        .zip(node)
        .ok_or_else(|| "missing cluster= or node= line".to_string())?;
    Ok((cluster, node, format))
}

fn write_identity(path: &Path, cluster: &str, node: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    write!(
        file,
        "cluster={cluster}\nnode={node}\nformat={}\n",
        format::CURRENT
    )?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("raftlb-datadir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn claims_once_then_refuses_another_identity() {
        let dir = scratch("identity");
        claim(&dir, "prod", 1).expect("fresh dir");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&dir).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "the data dir is private");
        }
        claim(&dir, "prod", 1).expect("same identity again");
        let other_node = claim(&dir, "prod", 2).expect_err("other node").to_string();
        assert!(
            other_node.contains("belongs to node 1 of cluster \"prod\""),
            "{other_node}"
        );
        let other_cluster = claim(&dir, "staging", 1).expect_err("other cluster").to_string();
        assert!(
            other_cluster.contains(&dir.display().to_string()),
            "{other_cluster}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_older_format_is_upgraded_after_opening_and_a_newer_refused() {
        let dir = scratch("format");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(IDENTITY_FILE), "cluster=prod\nnode=1\n").expect("write");
        let claimed = claim(&dir, "prod", 1).expect("format 1 is read");
        assert_eq!(claimed.format, 1);
        let unchanged = fs::read_to_string(dir.join(IDENTITY_FILE)).expect("read");
        assert!(!unchanged.contains("format="), "claiming alone changes nothing");
        claimed.upgrade().expect("upgrade");
        assert_eq!(claim(&dir, "prod", 1).expect("again").format, format::CURRENT);

        let newer = format::CURRENT + 1;
        fs::write(
            dir.join(IDENTITY_FILE),
            format!("cluster=prod\nnode=1\nformat={newer}\n"),
        )
        .expect("write");
        let refused = claim(&dir, "prod", 1).expect_err("newer").to_string();
        assert!(
            refused.contains(&format!("of format {newer}, written by a newer raftlb")),
            "{refused}"
        );
        assert!(refused.contains("nothing was changed"), "{refused}");

        let older = format::OLDEST - 1;
        fs::write(
            dir.join(IDENTITY_FILE),
            format!("cluster=prod\nnode=1\nformat={older}\n"),
        )
        .expect("write");
        let refused = claim(&dir, "prod", 1).expect_err("older").to_string();
        assert!(
            refused.contains(&format!("of format {older}, older than this binary reads")),
            "{refused}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_lock_at_a_time_and_the_lock_file_is_no_foreign_file() {
        let dir = scratch("lock");
        let held = lock(&dir).expect("first lock");
        let refused = lock(&dir).expect_err("second lock").to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(
            refused.contains(&pid) && refused.contains("--upgrade"),
            "{refused}"
        );
        // A successor adopts the very lock it was handed, and no other file.
        let handed = held.as_fd().try_clone_to_owned().expect("dup");
        let adopted = DirLock::adopt(&dir, handed).expect("adopt");
        let other = fs::File::open(std::env::temp_dir()).expect("a file");
        let wrong = DirLock::adopt(&dir, other.into())
            .expect_err("not the lock")
            .to_string();
        assert!(wrong.contains("not this data dir's raftlb.lock"), "{wrong}");
        claim(&dir, "prod", 1).expect("a dir holding only its lock is fresh");
        drop((held, adopted));
        drop(lock(&dir).expect("free again"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_a_foreign_directory_and_leaves_it_alone() {
        let dir = scratch("foreign");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("precious.txt"), "keep me").expect("write");
        let refused = claim(&dir, "prod", 1).expect_err("foreign").to_string();
        assert!(refused.contains("not a raftlb data dir"), "{refused}");
        assert_eq!(
            fs::read_to_string(dir.join("precious.txt")).expect("read"),
            "keep me"
        );
        assert!(!dir.join(IDENTITY_FILE).exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
