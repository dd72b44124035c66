//! Reading the config file: at start ([`load_config`]) and again while the
//! node runs (`systemctl reload`-style: SIGHUP, or `raftlb reload` over the
//! data dir's local socket). Both take one path, [`Reloader::reload`]:
//! validate the whole file (a broken one changes nothing), refuse another
//! node's, name the node-local settings that wait for a new process, and
//! reconcile the listeners and pools with the cluster state — committed as
//! one entry where the file is the truth, else only described.

pub mod client;
pub mod local;
pub mod report;

use crate::control::reconcile::{self, reconcile};
use crate::control::writer::Writer;
use raftlb_config::{Config, ConfigErrors};
use report::{Outcome, Report};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

impl LoadError {
    /// Every problem, one per line (`file:line: key: what`).
    pub fn lines(&self) -> Vec<String> {
        match self {
            LoadError::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
            LoadError::Read { .. } => vec![self.to_string()],
        }
    }
}

/// Reads and validates a configuration file.
pub fn load_config(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(raftlb_config::parse(&path.display().to_string(), &text)?)
}

/// Reads the config file again for a running node: one reload at a time.
#[derive(Debug)]
pub struct Reloader {
    /// The configuration this process started with: its node-local
    /// settings are the ones in effect.
    running: Config,
    /// This node's admin address, for the `raftlb ctl … apply` hint.
    admin: Option<SocketAddr>,
    writer: Writer,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(running: Config, writer: Writer) -> Reloader {
        Reloader {
            admin: running.membership.raft,
            running,
            writer,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads `path` and applies what a running process can: see the module
    /// doc. `[cluster] apply_file_on_reload` is taken from the file read.
    pub async fn reload(&self, path: &Path) -> Report {
        let _turn = self.one_at_a_time.lock().await;
        let report = |outcome, pending| Report {
            file: path.to_path_buf(),
            outcome,
            pending,
        };
        let file = match load_config(path) {
            Ok(file) => file,
            Err(e) => return report(Outcome::Invalid(e.lines()), Vec::new()),
        };
        // What `raftlb check` checks besides the text: the node's certificate.
        if let Err(e) = crate::control::cluster::links(&file) {
            return report(
                Outcome::Invalid(vec![format!("{}: {e}", path.display())]),
                Vec::new(),
            );
        }
        let local = local::compare(&self.running, &file);
        if !local.identity.is_empty() {
            return report(Outcome::Refused(local.identity), Vec::new());
        }
        let reconciled = reconcile(
            &self.writer,
            &file.cluster,
            file.membership.file_is_truth(),
            &reconcile::hint(self.admin, path),
        )
        .await;
        report(Outcome::Reconciled(reconciled), local.pending)
    }
}

/// Watches SIGHUP from now on: installed at start, so a SIGHUP that comes
/// early does not end the process (its default); `None` if it cannot be.
pub fn watch_sighup() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; reload with `raftlb reload`");
            None
        }
    }
}

/// On every SIGHUP, reloads `path` (the file the node was started with)
/// and logs what happened.
pub fn spawn_on_sighup(hangup: Option<Signal>, reloader: Arc<Reloader>, path: PathBuf) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut hangup) = hangup else { return };
        while hangup.recv().await.is_some() {
            tracing::info!(file = %path.display(), "SIGHUP: reading the config file again");
            reloader.reload(&path).await.log("SIGHUP");
        }
    })
}

/// Answers one `raftlb reload` request that came through the door.
pub fn spawn_request(request: crate::upgrade::ReloadRequest, reloader: Arc<Reloader>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let pid = request.pid();
        tracing::info!(pid, file = %request.config().display(), "raftlb reload: reading the config file");
        let report = reloader.reload(request.config()).await;
        report.log(&format!("raftlb reload, pid {pid}"));
        request.answer(report.ok(), report.lines()).await;
    })
}
