//! In-place upgrade: a new `raftlb run --upgrade` process (or the one
//! SIGUSR2 spawns) takes every listening socket and the data dir's lock
//! from the running one, so no listener is ever unserved and one process
//! at a time writes the Raft log. The conversation (README, *In-place
//! upgrade*), over [`handoff`]:
//!
//! 1. new → `Hello`; old → every descriptor of [`sockets`], then new → `Ready`;
//! 2. old hands leadership and VIPs over, stops Raft, waits until the log's
//!    file lock is free, → `Released` (it goes on serving meanwhile);
//! 3. new opens the log, starts Raft, serves the inherited sockets → `Serving`;
//! 4. old stops accepting, drains, exits. If new fails before `Released`,
//!    old goes on as it was; between `Released` and `Serving`, old starts a
//!    copy of its own binary to take over (once), and serves on meanwhile.
//!
//! The same socket takes `raftlb reload` requests ([`Visitor::Reload`]):
//! the door says who came; the node answers reloads itself.

pub mod handoff;
pub mod sockets;

use handoff::{Channel, HandoffError, Message};
use sockets::{Key, Kind, Registration};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::UnixListener;

/// The upgrade socket, in the data dir.
pub const SOCKET_FILE: &str = "raftlb.upgrade.sock";
/// How long either side waits for the other's next step (but `Serving`:
/// a new process may take long to catch up, and its death closes the socket).
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a stopped Raft may take to close its log.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "cannot upgrade in place: nothing listens on {path} ({source}); is a raftlb process \
         serving data dir {data_dir}? If not, start it with `raftlb run` (without --upgrade)"
    )]
    NoPredecessor {
        path: PathBuf,
        data_dir: String,
        source: io::Error,
    },
    #[error("in-place upgrade of data dir {data_dir}: {source}")]
    Handoff { data_dir: String, source: HandoffError },
    #[error("cannot listen for upgrades on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
}

/// The upgrade socket's path for `data_dir`.
pub fn socket_path(data_dir: &str) -> PathBuf {
    Path::new(data_dir).join(SOCKET_FILE)
}

/// The new process's side: holds the conversation with its predecessor.
#[derive(Debug)]
pub struct Successor {
    channel: Channel,
    data_dir: String,
}

impl Successor {
    /// Connects to the process serving `data_dir` and takes every
    /// descriptor it serves into [`sockets`]' inherited set.
    pub async fn connect(data_dir: &str, cluster: &str, node: u64) -> Result<Successor, UpgradeError> {
        let path = socket_path(data_dir);
        let mut channel =
            Channel::connect(&path, STEP_DEADLINE)
                .await
                .map_err(|source| UpgradeError::NoPredecessor {
                    path: path.clone(),
                    data_dir: data_dir.to_string(),
                    source,
                })?;
        let hello = Message::Hello {
            version: handoff::VERSION,
            cluster: cluster.to_string(),
            node,
        };
        let failed = |source| UpgradeError::Handoff {
            data_dir: data_dir.to_string(),
            source,
        };
        channel.send(&hello, &[]).await.map_err(failed)?;
        let inherited = channel.recv_sockets().await.map_err(failed)?;
        tracing::info!(
            descriptors = inherited.len(),
            "took the running process's sockets"
        );
        sockets::inherit(inherited);
        Ok(Successor {
            channel,
            data_dir: data_dir.to_string(),
        })
    }

    /// Says every descriptor is taken and waits until the predecessor has
    /// stopped its Raft and closed the log.
    pub async fn wait_released(&mut self) -> Result<(), UpgradeError> {
        let released = async {
            self.channel.send(&Message::Ready, &[]).await?;
            self.channel.expect(Message::Released, false).await
        };
        released.await.map_err(|source| UpgradeError::Handoff {
            data_dir: self.data_dir.clone(),
            source,
        })?;
        tracing::info!("the running process released the log");
        Ok(())
    }

    /// Says this process serves every listener: the predecessor stops accepting.
    pub async fn serving(mut self) -> Result<(), UpgradeError> {
        self.channel
            .send(&Message::Serving, &[])
            .await
            .map_err(|source| UpgradeError::Handoff {
                data_dir: self.data_dir.clone(),
                source,
            })
    }
}

/// The running process's side: the upgrade socket, accepting successors
/// and reload requests.
#[derive(Debug)]
pub struct Door {
    listener: UnixListener,
    cluster: String,
    node: u64,
    _registration: Registration,
}

/// Who came through the door.
#[derive(Debug)]
pub enum Visitor {
    /// A successor that holds every descriptor and waits for the log.
    Successor(Pending),
    /// `raftlb reload`: read a config file again, then answer.
    Reload(ReloadRequest),
}

/// A successor that holds every descriptor and waits for the log.
#[derive(Debug)]
pub struct Pending {
    channel: Channel,
    pid: u32,
}

/// A `raftlb reload` waiting for its answer.
#[derive(Debug)]
pub struct ReloadRequest {
    channel: Channel,
    pid: u32,
    config: PathBuf,
}

impl Door {
    /// Listens on `data_dir`'s upgrade socket (the inherited one after an
    /// upgrade). Call with the data dir's lock held.
    pub fn open(data_dir: &str, cluster: &str, node: u64) -> Result<Door, UpgradeError> {
        let path = socket_path(data_dir);
        let error = |source| UpgradeError::Listen {
            path: path.clone(),
            source,
        };
        let key = Key::unaddressed(Kind::Upgrade);
        let listener = match sockets::take(key) {
            Some(fd) => std::os::unix::net::UnixListener::from(fd),
            None => handoff::listen(&path).map_err(error)?,
        };
        listener.set_nonblocking(true).map_err(error)?;
        let registration = sockets::register(key, listener.as_fd()).map_err(error)?;
        Ok(Door {
            listener: UnixListener::from_std(listener).map_err(error)?,
            cluster: cluster.to_string(),
            node,
            _registration: registration,
        })
    }

    /// Waits for a successor that has taken every descriptor and is ready
    /// for the log, or for a reload request. Conversations that fail on
    /// the way are logged and end there; this process has changed nothing
    /// for them.
    pub async fn next(&self) -> Visitor {
        loop {
            let channel = match Channel::accept(&self.listener, STEP_DEADLINE).await {
                Ok(channel) => channel,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept on the upgrade socket; pausing 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match visit(channel, &self.cluster, self.node).await {
                Ok(visitor) => return visitor,
                Err(e) => tracing::warn!(error = %e, "in-place upgrade or reload abandoned; serving on"),
            }
        }
    }

    /// [`Door::next`] for a successor only, while this process cannot
    /// reload (it is handing over): a reload request is told `why`.
    pub async fn next_successor(&self, why: &str) -> Pending {
        loop {
            match self.next().await {
                Visitor::Successor(pending) => return pending,
                Visitor::Reload(request) => request.answer(false, vec![why.to_string()]).await,
            }
        }
    }
}

/// The old side's first step: who is it? Only a process of this user is
/// heard. A successor for this node of this cluster is given every
/// descriptor and says it is ready; a reload request waits for its answer.
async fn visit(mut channel: Channel, cluster: &str, node: u64) -> Result<Visitor, HandoffError> {
    let (pid, same_user) = channel.peer()?;
    let (first, _) = channel.recv(false).await?;
    let refusal = match first {
        _ if !same_user => Some(format!("process {pid} runs as another user")),
        Message::Reload { config } => {
            return Ok(Visitor::Reload(ReloadRequest {
                channel,
                pid,
                config: PathBuf::from(config),
            }));
        }
        Message::Hello { version, .. } if version != handoff::VERSION => Some(format!(
            "the new process speaks upgrade protocol {version}, this one {}",
            handoff::VERSION
        )),
        Message::Hello {
            cluster: c, node: n, ..
        } if c != cluster || n != node => Some(format!(
            "this data dir is node {node}'s of cluster \"{cluster}\", the new process is node {n} of \"{c}\""
        )),
        Message::Hello { .. } => None,
        _ => Some("the first message was neither hello nor reload".to_string()),
    };
    if let Some(reason) = refusal {
        channel.refuse(&reason).await;
        return Err(HandoffError::Refused(reason));
    }
    tracing::info!(pid, "a new process asks to take over: handing it every socket");
    let served = sockets::served()?;
    channel.send_sockets(&served).await?;
    channel.expect(Message::Ready, false).await?;
    Ok(Visitor::Successor(Pending { channel, pid }))
}

impl ReloadRequest {
    /// The asking process's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The config file to read, as the asking process named it.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Answers (best effort: the asker may have gone). Lines past what one
    /// frame holds are cut, saying how many; the node's log has them all.
    pub async fn answer(mut self, ok: bool, mut lines: Vec<String>) {
        let mut room = handoff::MAX_FRAME / 2;
        let fit = lines
            .iter()
            .take_while(|line| match room.checked_sub(line.len() + 8) {
                Some(left) => {
                    room = left;
                    true
                }
                None => false,
            })
            .count();
        if fit < lines.len() {
            let cut = lines.len() - fit;
            lines.truncate(fit);
            lines.push(format!("… and {cut} more lines: see the node's log"));
        }
        if let Err(e) = self.channel.send(&Message::Reloaded { ok, lines }, &[]).await {
            tracing::warn!(pid = self.pid, error = %e, "the reload's answer was not delivered");
        }
    }
}

impl Pending {
    /// The new process's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Step 2's end: the log is closed; then waits (for as long as the new
    /// process lives) until it serves.
    pub async fn release(mut self) -> Result<(), HandoffError> {
        self.channel.send(&Message::Released, &[]).await?;
        self.channel.expect(Message::Serving, true).await
    }

    /// The log could not be released: the new process gives up.
    pub async fn refuse(mut self, reason: &str) {
        self.channel.refuse(reason).await;
    }
}

/// Waits until no process holds the Raft log's file lock, so the new
/// process can open it: `DATA_DIR/raft-log/lock`, or, handed over by a
/// release whose log is in sled (formats 1 to 3), sled's `DATA_DIR/raft/db`.
pub async fn wait_log_released(data_dir: &str) -> Result<(), String> {
    for lock in [
        Path::new(data_dir).join("raft-log").join("lock"),
        Path::new(data_dir).join("raft").join("db"),
    ] {
        wait_unlocked(&lock).await?;
    }
    Ok(())
}

async fn wait_unlocked(lock: &Path) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let file = match std::fs::File::open(lock) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot open {}: {e}", lock.display())),
        };
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            // Closing the file drops the probe's lock.
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) if start.elapsed() < RELEASE_DEADLINE => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                return Err(format!(
                    "the Raft log {} is still locked {:?} after Raft stopped: {e}",
                    lock.display(),
                    start.elapsed()
                ));
            }
        }
    }
}

/// Which binary a successor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// The file at this process's path as it is now: a new binary (SIGUSR2).
    OnDisk,
    /// The very binary this process runs, even if replaced on disk since:
    /// to get Raft back after a new binary failed.
    This,
}

/// On every SIGUSR2, starts this program as it is on disk now (a new
/// binary, nginx-style) with this process's arguments and `--upgrade`.
pub fn spawn_on_sigusr2() -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let usr2 = signal(SignalKind::user_defined2());
    tokio::spawn(async move {
        let mut usr2 = match usr2 {
            Ok(usr2) => usr2,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGUSR2; upgrade with `raftlb run --upgrade`");
                return;
            }
        };
        while usr2.recv().await.is_some() {
            start_successor(Binary::OnDisk, "SIGUSR2");
        }
    })
}

/// Starts a process of `binary` with this process's arguments and
/// `--upgrade`, which takes over from this one; says what became of it.
pub fn start_successor(binary: Binary, why: &'static str) {
    match spawn_successor(binary) {
        Ok(mut child) => {
            tracing::info!(
                pid = child.id(),
                why,
                ?binary,
                "started a new process to take over"
            );
            tokio::spawn(async move {
                if let Ok(status) = child.wait().await
                    && !status.success()
                {
                    tracing::warn!(%status, why, "the new process failed; serving on");
                }
            });
        }
        Err(e) => tracing::error!(error = %e, why, "cannot start a new process; serving on"),
    }
}

fn spawn_successor(binary: Binary) -> io::Result<tokio::process::Child> {
    let exe = match binary {
        // /proc/self/exe names the file this process was started from; a
        // binary replaced since is the new file at that path.
        Binary::OnDisk => {
            let exe = std::env::current_exe()?;
            match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
                Some(path) => PathBuf::from(path),
                None => exe,
            }
        }
        // Executing the link itself runs this process's own file.
        Binary::This => PathBuf::from("/proc/self/exe"),
    };
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args.iter().any(|a| a == "--upgrade") {
        args.push("--upgrade".into());
    }
    tokio::process::Command::new(exe).args(args).spawn()
}
