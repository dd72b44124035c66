//! The batching proposer: the one door through which the data plane
//! proposes changes (sticky entries, health transitions). Workers never
//! block on Raft: they queue a command and await its own outcome.
//! One task commits whatever has queued as a single
//! [`Command::Independent`] entry, so a burst of N proposals costs one
//! Raft round trip (one fsync, one forward to the leader) instead of N,
//! and each proposal still gets its own outcome. While one batch is in
//! flight the next one accumulates; at most [`MAX_BATCH`] ride together.

use super::writer::Writer;
use raftlb_config::{Command, Outcome};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The most commands one log entry carries.
pub const MAX_BATCH: usize = 1024;
/// Proposals waiting beyond this are refused: a data plane outrunning Raft
/// must shed proposals, not memory.
const QUEUE: usize = 16 * 1024;

/// Why a proposal has no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("the proposal queue is full ({QUEUE} waiting); Raft is not keeping up")]
    Full,
    #[error("the control plane has stopped")]
    Stopped,
    /// The batch was not confirmed (no quorum, leader lost, timeout): it
    /// may or may not be applied, so only idempotent commands may be
    /// proposed again blindly. The text is the admin service's.
    #[error("not confirmed (it may still be applied): {0}")]
    Unconfirmed(String),
}

/// A proposal's outcome and the log index of the entry that carried it.
pub type Proposed = Result<(u64, Outcome), ProposeError>;

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Proposed>,
}

/// A handle to the node's proposer; cheap to clone into every worker.
#[derive(Clone, Debug)]
pub struct Proposer {
    queue: mpsc::Sender<Proposal>,
}

impl Proposer {
    /// Starts the batching task; it ends when every handle is dropped.
    pub fn start(writer: Writer) -> (Proposer, JoinHandle<()>) {
        let (queue, inbox) = mpsc::channel(QUEUE);
        (Proposer { queue }, tokio::spawn(run(writer, inbox)))
    }

    /// Queues `command` and waits for its own outcome (and log index: the
    /// leader has applied it; this node may not have yet).
    pub async fn propose(&self, command: Command) -> Proposed {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .try_send(Proposal { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProposeError::Full,
                mpsc::error::TrySendError::Closed(_) => ProposeError::Stopped,
            })?;
        outcome.await.map_err(|_| ProposeError::Stopped)?
    }
}

async fn run(writer: Writer, mut inbox: mpsc::Receiver<Proposal>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.drain(..).map(|p| (p.command, p.reply)).unzip();
        let outcomes = match writer.submit(Command::Independent(commands), false).await {
            Ok((index, Outcome::Each(outcomes))) if outcomes.len() == replies.len() => {
                outcomes.into_iter().map(|o| Ok((index, o))).collect()
            }
            Ok((_, other)) => {
                let error = ProposeError::Unconfirmed(format!("unexpected outcome {other:?}"));
                vec![Err(error); replies.len()]
            }
            Err(status) => {
                let error = ProposeError::Unconfirmed(status.message().to_string());
                vec![Err(error); replies.len()]
            }
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The proposer may have stopped waiting; nothing to do then.
            let _ = reply.send(outcome);
        }
    }
}
