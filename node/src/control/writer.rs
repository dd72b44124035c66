//! [`Writer`]: the one door into the Raft log, for admin writes, the data
//! plane's batched proposals and the seed alike, and the reads that go
//! with it. A write is committed through the leader (this node, or the one
//! it knows, once) and answered when it is applied here too; a read is
//! linearizable (leadership confirmed first) unless asked stale. Every
//! wait is bounded by [`WRITE_TIMEOUT`] (a large write's by more): without a quorum the caller gets
//! `Unavailable` with a sentence saying so, never a hang.
//!
//! What a read returns never holds a secret: private keys and the
//! sticky-cookie secret stay inside Raft replication and the data dir.

use super::leader_link::{LeaderLink, Redirect, forwarded};
use super::state_machine::Applied;
use super::types::{Node, NodeId, Raft};
use super::versions::Versions;
use openraft::error::{ClientWriteError, RaftError};
use raftlb_config::{Command, Outcome, Proposal};
use raftlb_proto::admin::{ReadReply, ReadRequest, WriteRequest};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tonic::Status;

/// How long a write, a linearizable read or a membership change may wait
/// for a quorum before the caller is told there is none.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than [`WRITE_TIMEOUT`] a large entry may take to be
/// replicated, stored and applied: a second per this many bytes (100 000
/// backends in one `ctl apply` are about 2 MB).
const BYTES_PER_EXTRA_SECOND: usize = 128 * 1024;
/// The longest a forwarded write waits for this node to apply it.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(2);
/// How often a write held back by a leadership transfer looks again.
const HANDOVER_POLL: Duration = Duration::from_millis(10);

/// Writes to and reads from the replicated state.
#[derive(Clone)]
pub struct Writer {
    me: NodeId,
    raft: Raft,
    applied: watch::Receiver<Arc<Applied>>,
    link: LeaderLink,
    /// Set while this node, as leader, steps aside (transfer, drain).
    standing_down: Arc<AtomicBool>,
    /// Which format a command is written in, or why not yet.
    versions: Arc<Versions>,
    /// Writes submitted and not yet answered.
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub fn new(
        me: NodeId,
        raft: Raft,
        applied: watch::Receiver<Arc<Applied>>,
        link: LeaderLink,
        standing_down: Arc<AtomicBool>,
        versions: Arc<Versions>,
    ) -> Writer {
        Writer {
            me,
            raft,
            applied,
            link,
            standing_down,
            versions,
            in_flight: Arc::default(),
        }
    }

    /// Writes submitted here and not yet answered (a batch counts once).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Commits `command` through the leader (this node or, once, the one it
    /// knows) and returns its log index and what applying it did. While
    /// this node steps aside for a leadership transfer, the write waits
    /// (up to [`WRITE_TIMEOUT`]) for the transfer to end and then goes to
    /// whoever leads: an entry appended meanwhile would renew the
    /// followers' lease on this node and make them refuse the target's
    /// votes (seen in jepsen's `transfer` and `drain` runs under steady
    /// admin writes). A write already handed to Raft when the step-aside
    /// begins still goes out; the campaign waits two election timeouts.
    /// The command is written in the cluster's format version; one that
    /// needs a newer version than the cluster runs is refused with a
    /// sentence naming the members still on an older one.
    pub async fn submit(&self, command: Command, forwarded_here: bool) -> Result<(u64, Outcome), Status> {
        let _in_flight = InFlight::enter(&self.in_flight);
        let cluster_version = self.applied.borrow().state.cluster_version();
        let members: Vec<NodeId> = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        let format = self
            .versions
            .format_for(&command, cluster_version, members)
            .map_err(Status::failed_precondition)?;
        let proposal = Proposal::new(format, command);
        // Encoded up front: `client_write` consumes the proposal, and a
        // follower must still send it on to the leader.
        let encoded = proposal.encode().map_err(Status::internal)?;
        let handover = async {
            while self.standing_down.load(Ordering::Acquire) {
                tokio::time::sleep(HANDOVER_POLL).await;
            }
        };
        if tokio::time::timeout(WRITE_TIMEOUT, handover).await.is_err() {
            return Err(Status::unavailable(format!(
                "a leadership transfer is still under way after {WRITE_TIMEOUT:?}; the write was not submitted"
            )));
        }
        bounded(write_limit(encoded.len()), "write", async {
            let here = match self.raft.client_write(proposal).await {
                Ok(written) => Ok((written.log_id.index, written.data)),
                Err(e) => Err(write_error(e)),
            };
            self.link
                .here_or_at_leader(here, forwarded_here, |mut leader| async move {
                    let reply = leader
                        .write(forwarded(WriteRequest { command: encoded }))
                        .await?
                        .into_inner();
                    let outcome = postcard::from_bytes(&reply.outcome)
                        .map_err(|e| Status::internal(format!("the leader's outcome is undecodable: {e}")))?;
                    // Read your writes: this node answers once it has
                    // applied them too (or, if it lags far behind, after a
                    // while anyway: the write is committed either way).
                    let index = reply.log_index;
                    let mut applied = self.applied.clone();
                    let caught_up = applied.wait_for(|a| a.last_applied.is_some_and(|id| id.index >= index));
                    let _ = tokio::time::timeout(LOCAL_APPLY_WAIT, caught_up).await;
                    Ok((index, outcome))
                })
                .await
        })
        .await
    }

    /// The replicated state, without secrets: from this node's copy if
    /// `stale`, else after confirming leadership (here, or at the leader).
    pub async fn read(&self, stale: bool, forwarded_here: bool) -> Result<ReadReply, Status> {
        if stale {
            return self.local_read();
        }
        bounded(WRITE_TIMEOUT, "linearizable read", async {
            let here = match self.raft.ensure_linearizable().await {
                Ok(_) => self.local_read().map_err(Redirect::Failed),
                Err(e) => match e.forward_to_leader::<Node>() {
                    Some(forward) => Err(Redirect::ToLeader(forward.clone())),
                    None => Err(Redirect::Failed(Status::internal(format!(
                        "this node's Raft has stopped: {e}"
                    )))),
                },
            };
            self.link
                .here_or_at_leader(here, forwarded_here, |mut leader| async move {
                    Ok(leader
                        .read(forwarded(ReadRequest { stale: false }))
                        .await?
                        .into_inner())
                })
                .await
        })
        .await
    }

    fn local_read(&self) -> Result<ReadReply, Status> {
        let applied = Arc::clone(&self.applied.borrow());
        let state = postcard::to_allocvec(&applied.state.without_secrets())
            .map_err(|e| Status::internal(format!("cannot encode the state: {e}")))?;
        Ok(ReadReply {
            state,
            applied_index: applied.last_applied.map_or(0, |id| id.index),
            node_id: self.me,
        })
    }
}

/// One write counted in [`Writer::in_flight`] until it is dropped (answered
/// or abandoned).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a write of `bytes` may wait for its commit.
fn write_limit(bytes: usize) -> Duration {
    WRITE_TIMEOUT + Duration::from_secs((bytes / BYTES_PER_EXTRA_SECOND) as u64)
}

/// Bounds `work` by `limit`, turning the timeout into a sentence.
pub async fn bounded<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(Status::unavailable(format!(
            "no quorum: the {what} was not confirmed within {limit:?} (it may still be applied if a quorum returns)"
        )))
    })
}

/// openraft's write errors: "ask the leader", or a failure to report.
pub fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> Redirect {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => Redirect::ToLeader(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Redirect::Failed(Status::failed_precondition(e.to_string()))
        }
        RaftError::Fatal(e) => {
            Redirect::Failed(Status::internal(format!("this node's Raft has stopped: {e}")))
        }
    }
}
