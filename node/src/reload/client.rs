//! `raftlb reload --config FILE`: checks FILE, finds the process serving its
//! data dir by the dir's local socket, asks it to read FILE again and
//! brings back what it did.

use super::load_config;
use crate::upgrade::handoff::{Channel, HandoffError, Message};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the running process may take to answer: a reload waits for a
/// quorum to read and to commit, each within the writer's bounds.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// Why `raftlb reload` could not ask.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    File(String),
    #[error(
        "cannot reload: nothing listens on {path} ({source}); is a raftlb process serving data dir \
         {data_dir}? If not, start it with `raftlb run --config FILE`"
    )]
    NothingRuns {
        path: PathBuf,
        data_dir: String,
        source: std::io::Error,
    },
    #[error(
        "the process serving data dir {data_dir} closed the connection without answering: a raftlb \
         older than reload (SIGHUP works there), or it is stopping"
    )]
    NoAnswer { data_dir: String },
    #[error("reload through {path}: {source}")]
    Conversation { path: PathBuf, source: HandoffError },
}

/// What the running process answered: whether the file took, and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    pub lines: Vec<String>,
}

/// Checks the file at `config` (a broken one goes nowhere) and asks the
/// process serving its data dir to reload it, by its canonical path.
pub async fn run(config: &Path) -> Result<Answer, ReloadError> {
    let file = load_config(config).map_err(|e| ReloadError::File(e.lines().join("\n")))?;
    let canonical = std::fs::canonicalize(config)
        .map_err(|e| ReloadError::File(format!("cannot resolve {}: {e}", config.display())))?;
    let data_dir = file.node.data_dir;
    let path = crate::upgrade::socket_path(&data_dir);
    let mut channel =
        Channel::connect(&path, ANSWER_DEADLINE)
            .await
            .map_err(|source| ReloadError::NothingRuns {
                path: path.clone(),
                data_dir: data_dir.clone(),
                source,
            })?;
    let failed = |source| match source {
        HandoffError::Closed => ReloadError::NoAnswer {
            data_dir: data_dir.clone(),
        },
        source => ReloadError::Conversation {
            path: path.clone(),
            source,
        },
    };
    let ask = Message::Reload {
        config: canonical.display().to_string(),
    };
    channel.send(&ask, &[]).await.map_err(failed)?;
    match channel.recv(false).await.map_err(failed)? {
        (Message::Reloaded { ok, lines }, _) => Ok(Answer { ok, lines }),
        (other, _) => Err(failed(HandoffError::Unexpected {
            expected: "reloaded",
            got: other.step(),
        })),
    }
}
