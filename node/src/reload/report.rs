//! What one reload did, as lines an operator reads: in the node's log
//! (each at its level) and, for `raftlb reload`, on its terminal.

use crate::control::reconcile::{Description, Reconciled};
use std::path::PathBuf;

/// The outcome of reading the config file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub file: PathBuf,
    pub outcome: Outcome,
    /// Node-local settings that differ and wait for a new process.
    pub pending: Vec<String>,
}

/// What became of the file's listeners and pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file fails `raftlb check`: every problem (`file:line: key: what`).
    Invalid(Vec<String>),
    /// The file names another node, data dir or cluster.
    Refused(Vec<String>),
    /// Compared with the cluster state (and committed where the file is the truth).
    Reconciled(Reconciled),
}

/// How loud a line is in the node's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Report {
    /// Whether the file is in effect (or, on a cluster node that does not
    /// apply its file, was compared): `raftlb reload` exits 0.
    pub fn ok(&self) -> bool {
        match &self.outcome {
            Outcome::Invalid(_) | Outcome::Refused(_) => false,
            Outcome::Reconciled(reconciled) => reconciled.is_success(),
        }
    }

    /// Every line, with its level.
    pub fn entries(&self) -> Vec<(Level, String)> {
        let file = self.file.display();
        let mut entries = Vec::new();
        match &self.outcome {
            Outcome::Invalid(errors) => {
                entries.push((Level::Error, format!("{file} fails its check; nothing changed:")));
                entries.extend(errors.iter().map(|e| (Level::Error, e.clone())));
            }
            Outcome::Refused(identity) => {
                entries.push((
                    Level::Error,
                    format!("{file} is not this process's file; nothing changed:"),
                ));
                entries.extend(identity.iter().map(|e| (Level::Error, e.clone())));
                entries.push((
                    Level::Error,
                    "a node's identity changes only by stopping it and starting it with the new file"
                        .to_string(),
                ));
            }
            Outcome::Reconciled(reconciled) => {
                let level = match reconciled {
                    Reconciled::Same | Reconciled::Applied { .. } => Level::Info,
                    Reconciled::Differs { .. } => Level::Warn,
                    Reconciled::Failed(_) | Reconciled::Unreadable(_) => Level::Error,
                };
                let Description {
                    headline,
                    changes,
                    hint,
                } = reconciled.describe();
                entries.push((level, format!("{file}: {headline}")));
                entries.extend(changes.into_iter().map(|c| (level, format!("  {c}"))));
                entries.extend(hint.map(|h| (level, h)));
            }
        }
        entries.extend(self.pending.iter().map(|p| (Level::Warn, p.clone())));
        entries
    }

    /// The lines alone, for `raftlb reload`.
    pub fn lines(&self) -> Vec<String> {
        self.entries().into_iter().map(|(_, line)| line).collect()
    }

    /// Logs every line, saying what asked for the reload.
    pub fn log(&self, why: &str) {
        for (level, line) in self.entries() {
            match level {
                Level::Info => tracing::info!("reload ({why}): {line}"),
                Level::Warn => tracing::warn!("reload ({why}): {line}"),
                Level::Error => tracing::error!("reload ({why}): {line}"),
            }
        }
    }
}
