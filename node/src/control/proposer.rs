//! The batching proposer: the one door through which the data plane
//! proposes changes (sticky entries, health transitions). Workers never
//! block on Raft: they queue a command and await its own outcome.
//! One task commits whatever has queued as a single
//! [`Command::Independent`] entry, so a burst of N proposals costs one
//! Raft round trip (one fsync, one forward to the leader) instead of N,
//! and each proposal still gets its own outcome. While one batch is in
//! flight the next one accumulates; at most [`MAX_BATCH`] ride together.
//!
//! The queue has two shares. Sticky sessions wait in theirs
//! ([`STICKY_SHARE`]), and are shed when it is full; everything else
//! (health verdicts, expiry, the cookie secret, certificates from files)
//! waits in a reserved share that sessions cannot fill, and rides first in
//! every batch. So a flood of sessions delays a verdict by at most the
//! batch in flight. Admin writes do not queue here at all: they go to the
//! [`Writer`] directly, behind at most one batch in flight per node.

use super::writer::Writer;
use raftlb_config::{Command, Outcome, StickyChange};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The most commands one log entry carries.
pub const MAX_BATCH: usize = 1024;
/// Sticky sessions waiting beyond this are shed: a data plane outrunning
/// Raft must shed proposals, not memory.
pub const STICKY_SHARE: usize = 12 * 1024;
/// Room for every other proposal, which sticky sessions never take.
pub const RESERVED_SHARE: usize = 4 * 1024;

/// Why a proposal has no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("the proposal queue's reserved share is full ({RESERVED_SHARE} waiting); Raft is not keeping up")]
    Full,
    #[error(
        "the sticky sessions' share of the proposal queue is full ({STICKY_SHARE} waiting); the session is shed"
    )]
    StickyFull,
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
    reserved: mpsc::Sender<Proposal>,
    sticky: mpsc::Sender<Proposal>,
}

impl Proposer {
    /// Starts the batching task; it ends when every handle is dropped.
    pub fn start(writer: Writer) -> (Proposer, JoinHandle<()>) {
        let (reserved, reserved_inbox) = mpsc::channel(RESERVED_SHARE);
        let (sticky, sticky_inbox) = mpsc::channel(STICKY_SHARE);
        let task = tokio::spawn(run(writer, reserved_inbox, sticky_inbox));
        (Proposer { reserved, sticky }, task)
    }

    /// Proposals queued in either share, not yet taken into a batch.
    pub fn waiting(&self) -> usize {
        [&self.reserved, &self.sticky]
            .iter()
            .map(|share| share.max_capacity() - share.capacity())
            .sum()
    }

    /// Queues `command` in its share and waits for its own outcome (and
    /// log index: the leader has applied it; this node may not have yet).
    pub async fn propose(&self, command: Command) -> Proposed {
        let (reply, outcome) = oneshot::channel();
        let session = matches!(command, Command::Sticky(StickyChange::Stick { .. }));
        let share = if session { &self.sticky } else { &self.reserved };
        share.try_send(Proposal { command, reply }).map_err(|e| match e {
            TrySendError::Full(_) if session => ProposeError::StickyFull,
            TrySendError::Full(_) => ProposeError::Full,
            TrySendError::Closed(_) => ProposeError::Stopped,
        })?;
        outcome.await.map_err(|_| ProposeError::Stopped)?
    }
}

/// Waits for a proposal, then takes what else waits, up to [`MAX_BATCH`]:
/// the reserved share's first, sticky sessions in the room left. `false`
/// once the proposer is dropped.
async fn next_batch(
    reserved: &mut mpsc::Receiver<Proposal>,
    sticky: &mut mpsc::Receiver<Proposal>,
    batch: &mut Vec<Proposal>,
) -> bool {
    let first = tokio::select! {
        biased;
        first = reserved.recv() => first,
        first = sticky.recv() => first,
    };
    let Some(first) = first else { return false };
    batch.push(first);
    for share in [reserved, sticky] {
        while batch.len() < MAX_BATCH {
            match share.try_recv() {
                Ok(proposal) => batch.push(proposal),
                Err(_) => break,
            }
        }
    }
    true
}

async fn run(writer: Writer, mut reserved: mpsc::Receiver<Proposal>, mut sticky: mpsc::Receiver<Proposal>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while next_batch(&mut reserved, &mut sticky, &mut batch).await {
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
