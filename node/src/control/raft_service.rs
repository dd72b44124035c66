//! The server half of node-to-node Raft: the tonic `Raft` service hands each
//! decoded request to the local openraft instance and returns its result,
//! `Ok` or openraft's error, as postcard bytes. The layer in front of it
//! ([`super::authz`]) admits only member nodes of the cluster; here the
//! message's claimed sender must also be the node whose certificate
//! brought it, and snapshot chunks must continue what was received. The
//! sender's format versions are recorded, and a message from a cluster
//! whose version this binary cannot take part in is refused, with the
//! sentence saying which versions it needs (nothing reaches the log).

use super::authz;
use super::election::{self, LeaderContact, PreVoteRequest};
use super::leadership::Leadership;
use super::log_store::LogStore;
use super::transport::Caller;
use super::types::{NodeId, Raft, TypeConfig, Vote};
use super::versions::{REFUSES_TO_JOIN, Versions};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest};
use raftlb_config::{Formats, RaftTiming};
use raftlb_proto::raft::raft_server;
use raftlb_proto::raft::{RaftReply, RaftRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// How often a refused cluster version is logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(5);

/// The largest snapshot this node takes in (it is assembled in memory).
const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    leadership: watch::Receiver<Leadership>,
    timing: RaftTiming,
    /// This node's log, for pre-votes.
    log: LogStore,
    /// When this node last heard from a leader, and the lease it asked for.
    contact: LeaderContact,
    /// Set while this node stands as a leadership transfer's target.
    campaigning: Arc<AtomicBool>,
    /// The snapshot being received, and how many of its bytes.
    receiving: Arc<Mutex<Option<(String, u64)>>>,
    versions: Arc<Versions>,
    /// When a refused cluster version was last logged.
    refusal_logged: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftService")
    }
}

impl RaftService {
    pub fn new(
        raft: Raft,
        leadership: watch::Receiver<Leadership>,
        timing: RaftTiming,
        versions: Arc<Versions>,
        log: LogStore,
        contact: LeaderContact,
        campaigning: Arc<AtomicBool>,
    ) -> Self {
        RaftService {
            raft,
            log,
            leadership,
            timing,
            contact,
            campaigning,
            receiving: Arc::default(),
            versions,
            refusal_logged: Arc::default(),
        }
    }

    /// Records the sender's formats, and refuses a message from a cluster
    /// whose version this binary cannot take part in (logged every
    /// [`REFUSAL_LOG_EVERY`]: a leader retries many times a second).
    fn check_versions(&self, request: &RaftRequest) -> Result<(), Status> {
        self.versions.heard(
            request.from,
            Formats::announced(request.format_min, request.format_max),
        );
        let Err(reason) = self.versions.admit_cluster(request.cluster_version) else {
            return Ok(());
        };
        let mut logged = self.refusal_logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            *logged = Some(Instant::now());
            tracing::error!(from = request.from, "refusing to join the cluster: {reason}");
        }
        Err(Status::failed_precondition(format!("{REFUSES_TO_JOIN}{reason}")))
    }

    fn reply<T: Serialize>(&self, result: &T) -> Result<Response<RaftReply>, Status> {
        let payload = postcard::to_allocvec(result)
            .map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
        let formats = self.versions.this();
        Ok(Response::new(RaftReply {
            payload,
            format_min: u32::from(formats.min),
            format_max: u32::from(formats.max),
        }))
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// A chunk must start a snapshot (offset 0) or continue the one being
    /// received without a gap: a far offset would make the receiving
    /// buffer grow to it.
    fn check_chunk(&self, chunk: &InstallSnapshotRequest<TypeConfig>) -> Result<(), Status> {
        let id = &chunk.meta.snapshot_id;
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        if end > MAX_SNAPSHOT_BYTES {
            return Err(Status::invalid_argument(format!(
                "snapshot {id}: a chunk ending at byte {end} is beyond the largest snapshot taken ({MAX_SNAPSHOT_BYTES} bytes)"
            )));
        }
        let mut receiving = self.receiving.lock().unwrap_or_else(|e| e.into_inner());
        let received = match receiving.as_ref() {
            _ if chunk.offset == 0 => 0,
            Some((current, received)) if current == id => *received,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "snapshot {id}: a chunk at offset {} before its start",
                    chunk.offset
                )));
            }
        };
        if chunk.offset > received {
            return Err(Status::invalid_argument(format!(
                "snapshot {id}: a chunk at offset {}, but only {received} bytes were received",
                chunk.offset
            )));
        }
        *receiving = (!chunk.done).then(|| (id.clone(), received.max(end)));
        Ok(())
    }

    /// A leader's VIP lease is counted from its last confirmation round,
    /// but openraft refreshes a node's own leader lease only when it hears
    /// from a leader, never while it is one: a long-standing leader would
    /// grant a vote at once, and a new leader (and VIP owner) could exist
    /// while its fence still holds. Refuse, as followers do, until a vote
    /// lease after the last confirmation, even once this node has stepped
    /// down (a candidate's higher term deposes it at once); and as a
    /// follower, while the lease its leader asked for runs (openraft's own
    /// is one election timeout, whatever the leader's release relies on).
    fn refuse_vote_while_leasing(&self) -> Result<(), Status> {
        if let Some(at) = self.leadership.borrow().last_confirmed_at
            && at.elapsed() < self.timing.vote_lease()
        {
            return Err(Status::unavailable(format!(
                "vote refused: this node was confirmed leader {:?} ago and its VIP lease may still be live",
                at.elapsed()
            )));
        }
        self.contact.refuse_vote().map_err(Status::unavailable)
    }

    /// Stamps the contact when a message comes from a leader this node
    /// would follow (its vote at least this node's), before Raft answers
    /// it: once answered, the sender may count this node in a quorum round,
    /// and this node's own candidacy and claims must see that contact.
    /// (Stamped again after a successful answer, which is later.)
    fn heard_before_answering(&self, vote: &Vote, request: &RaftRequest) {
        if *vote >= self.raft.metrics().borrow().vote {
            self.contact.heard(self.asked_lease(request));
        }
    }

    /// The vote lease a leader's message asks for: a release before the
    /// field relied on two election timeouts.
    fn asked_lease(&self, request: &RaftRequest) -> Duration {
        match request.vote_lease_ms {
            0 => self.timing.election_timeout * 2,
            ms => Duration::from_millis(u64::from(ms)),
        }
    }
}

fn decode<T: DeserializeOwned>(request: &RaftRequest, what: &str) -> Result<T, Status> {
    raftlb_config::proposal::decode_carrier(&request.payload).map_err(|e| {
        Status::invalid_argument(format!(
            "undecodable {what} from node {}: {e} (it reads formats {}; this node {})",
            request.from,
            Formats::announced(request.format_min, request.format_max),
            Formats::BUILT,
        ))
    })
}

/// The node id the request claims to come from, for logs.
fn sender(request: &RaftRequest) -> NodeId {
    request.from
}

impl RaftService {
    /// The message, once its claimed sender is known to be the certified
    /// caller and, in a cleartext cluster where nobody is certified, a
    /// member: not a node that was removed, or one configured with
    /// another's id. A node that has no membership yet (never initialized,
    /// or being added) hears any sender: that is how it learns the
    /// membership. (Certified callers are checked for membership by the
    /// layer in front.)
    fn check_sender(&self, request: Request<RaftRequest>) -> Result<RaftRequest, Status> {
        let from = request.get_ref().from;
        let caller = Caller::of(&request);
        if let Err(status) = authz::sender_is_caller(caller, from) {
            authz::log_refusal(
                caller.and_then(|c| c.address).map(|a| a.ip()),
                &format!("Raft message: {}", status.message()),
            );
            return Err(status);
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_some() && membership.get_node(&from).is_none() {
            let members: Vec<String> = membership.nodes().map(|(id, _)| id.to_string()).collect();
            authz::log_refusal(
                None,
                &format!("Raft traffic from node {from}, which is not a member"),
            );
            return Err(Status::permission_denied(format!(
                "node {from} is not a member of this cluster (members: {}); add it with `raftlb ctl member add`",
                members.join(", ")
            )));
        }
        Ok(request.into_inner())
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = self.check_sender(request)?;
        self.check_versions(&request)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request, "AppendEntries")?;
        self.heard_before_answering(&rpc.vote, &request);
        let result = self.raft.append_entries(rpc).await;
        match &result {
            Ok(AppendEntriesResponse::HigherVote(_)) => {}
            Ok(_) => self.contact.heard(self.asked_lease(&request)),
            Err(e) => tracing::debug!(from = sender(&request), error = %e, "append_entries refused"),
        }
        self.reply(&result)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = self.check_sender(request)?;
        self.check_versions(&request)?;
        self.refuse_vote_while_leasing()?;
        let rpc = decode(&request, "Vote")?;
        let result = self.raft.vote(rpc).await;
        if result.as_ref().is_ok_and(|r| r.vote_granted) {
            self.contact.voted();
        }
        self.reply(&result)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = self.check_sender(request)?;
        self.check_versions(&request)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&request, "InstallSnapshot")?;
        self.check_chunk(&rpc)?;
        let vote = rpc.vote;
        self.heard_before_answering(&vote, &request);
        let result = self.raft.install_snapshot(rpc).await;
        if result.as_ref().is_ok_and(|r| r.vote == vote) {
            self.contact.heard(self.asked_lease(&request));
        }
        self.reply(&result)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = self.check_sender(request)?;
        self.check_versions(&request)?;
        let ask: PreVoteRequest = decode(&request, "PreVote")?;
        let leadership = *self.leadership.borrow();
        let answer = election::answer(
            &self.raft,
            &self.log,
            &self.contact,
            leadership,
            self.campaigning.load(Ordering::Relaxed),
            self.timing,
            &ask,
        );
        self.reply(&answer)
    }
}
