//! The config file's listeners and pools against the cluster state: seeding
//! a new cluster from the file, and, when the node starts or its file is
//! read again (reload), committing the file's differences as one entry
//! where the file is the truth (a standalone node; a cluster node with
//! `[cluster] apply_file_on_reload`), or saying how the file differs and
//! the `ctl` command that would apply it.

use super::state_machine::Applied;
use super::writer::Writer;
use raftlb_config::{ClusterSpec, ClusterState, Command};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What comparing the file with the cluster state did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The file and the state agree.
    Same,
    /// The differences were committed as one entry.
    Applied { changes: Vec<String>, index: u64 },
    /// The file differs; nothing was committed. `hint` applies it.
    Differs { changes: Vec<String>, hint: String },
    /// Committing was refused.
    Failed(String),
    /// The cluster state could not be read (no quorum yet, say).
    Unreadable(String),
}

/// What a [`Reconciled`] says, in an operator's words: a headline, the
/// changes one by one, and the command that would apply them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub headline: String,
    pub changes: Vec<String>,
    pub hint: Option<String>,
}

impl Reconciled {
    /// Whether the file is in effect, or deliberately not applied
    /// (`Differs`); `false` when committing failed or nothing could be compared.
    pub fn is_success(&self) -> bool {
        !matches!(self, Reconciled::Failed(_) | Reconciled::Unreadable(_))
    }

    /// What happened, for a log line or a terminal.
    pub fn describe(&self) -> Description {
        let (headline, changes, hint) = match self {
            Reconciled::Same => (
                "the config file matches the cluster state".to_string(),
                &[][..],
                None,
            ),
            Reconciled::Applied { changes, index } => (
                format!(
                    "committed the config file's {} as one entry at log index {index}:",
                    count(changes.len(), "change")
                ),
                &changes[..],
                None,
            ),
            Reconciled::Differs { changes, hint } => (
                format!(
                    "the config file differs from the cluster state in {}; serving the cluster state:",
                    count(changes.len(), "way")
                ),
                &changes[..],
                Some(format!("to make the cluster match the file: {hint}")),
            ),
            Reconciled::Failed(reason) => (
                format!("the config file was not applied: {reason}"),
                &[][..],
                None,
            ),
            Reconciled::Unreadable(reason) => (
                format!("the cluster state cannot be read to compare the config file: {reason}"),
                &[][..],
                None,
            ),
        };
        Description {
            headline,
            changes: changes.to_vec(),
            hint,
        }
    }

    /// Logs what happened, once, in the words an operator needs.
    pub fn log(&self, when: &str) {
        let Description {
            headline,
            changes,
            hint,
        } = self.describe();
        let mut text = format!("{when}: {headline}");
        if !changes.is_empty() {
            text = format!("{text} {}", changes.join("; "));
        }
        if let Some(hint) = hint {
            text = format!("{text}. {hint}");
        }
        match self {
            Reconciled::Same | Reconciled::Applied { .. } => tracing::info!("{text}"),
            Reconciled::Differs { .. } => tracing::warn!("{text}"),
            Reconciled::Failed(_) | Reconciled::Unreadable(_) => tracing::error!("{text}"),
        }
    }
}

/// "1 change", "3 changes".
fn count(n: usize, word: &str) -> String {
    match n {
        1 => format!("1 {word}"),
        n => format!("{n} {word}s"),
    }
}

/// The command that applies `config_path` to the cluster at `address`.
pub fn hint(address: Option<SocketAddr>, config_path: &Path) -> String {
    let node = address.map(|a| format!(" --node {a}")).unwrap_or_default();
    format!("raftlb ctl{node} apply --config {}", config_path.display())
}

/// Compares `file` with the cluster's current state (read linearizably:
/// a restarted node's own copy may still be behind) and, if `apply`,
/// commits the differences as one atomic batch.
pub async fn reconcile(writer: &Writer, file: &ClusterSpec, apply: bool, hint: &str) -> Reconciled {
    let state = match writer.read(false, false).await {
        Ok(reply) => match postcard::from_bytes::<ClusterState>(&reply.state) {
            Ok(state) => state,
            Err(e) => return Reconciled::Unreadable(format!("the cluster state cannot be decoded: {e}")),
        },
        Err(status) => return Reconciled::Unreadable(status.message().to_string()),
    };
    let commands = raftlb_config::diff::diff(state.spec(), file);
    if commands.is_empty() {
        return Reconciled::Same;
    }
    let changes: Vec<String> = commands.iter().map(ToString::to_string).collect();
    if !apply {
        return Reconciled::Differs {
            changes,
            hint: hint.to_string(),
        };
    }
    match writer.submit(Command::Batch(commands), false).await {
        Ok((index, outcome)) if outcome.is_applied() => Reconciled::Applied { changes, index },
        Ok((_, outcome)) => Reconciled::Failed(outcome.rejection()),
        Err(status) => Reconciled::Failed(status.message().to_string()),
    }
}

/// Seeds a new cluster with the file's listeners and pools (the first
/// node to get its `Bootstrap` committed wins; the others are refused),
/// then reconciles the file with the cluster state: committing its
/// differences if `apply` (a standalone node), else warning of them.
pub async fn seed(
    writer: Writer,
    mut applied: watch::Receiver<Arc<Applied>>,
    file: ClusterSpec,
    apply: bool,
    hint: String,
) {
    let mut waiting_logged = false;
    while !applied.borrow().state.is_bootstrapped() {
        if file.listeners.is_empty() && file.pools.is_empty() && file.gslb.is_none() {
            break;
        }
        // The cookie secret rides with the seed, so `cookie` sessions work
        // from the first request.
        let mut seed = vec![Command::Bootstrap(file.clone())];
        seed.extend(crate::sticky::upkeep::draw_secret().map(Command::SetStickySecret));
        match writer.submit(Command::Independent(seed), false).await {
            Ok((index, outcome)) if outcome.is_applied() => {
                tracing::info!(index, "seeded the cluster from the config file");
                return;
            }
            Ok(_) => {}
            Err(status) if !waiting_logged => {
                waiting_logged = true;
                tracing::info!(
                    reason = status.message(),
                    "waiting for a quorum to seed the cluster"
                );
            }
            Err(_) => {}
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), applied.changed()).await;
    }
    // Bootstrapped by someone else (or earlier): reconcile once the
    // cluster's state can be read.
    loop {
        match reconcile(&writer, &file, apply, &hint).await {
            Reconciled::Unreadable(_) => {}
            done => return done.log("at start"),
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), applied.changed()).await;
    }
}
