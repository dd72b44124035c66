//! The server half of node-to-node Raft: the tonic `Raft` service hands each
//! decoded request to the local openraft instance and returns its result,
//! `Ok` or openraft's error, as postcard bytes. Credentials are checked by
//! the interceptor in front of it ([`super::auth`]).

use super::leadership::Leadership;
use super::types::{NodeId, Raft};
use raftlb_config::RaftTiming;
use raftlb_proto::raft::raft_server;
use raftlb_proto::raft::{RaftReply, RaftRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    leadership: watch::Receiver<Leadership>,
    /// How long after its last confirmation as leader this node refuses
    /// to vote: openraft's own follower lease (two election timeouts).
    vote_hold: Duration,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftService")
    }
}

impl RaftService {
    pub fn new(raft: Raft, leadership: watch::Receiver<Leadership>, timing: RaftTiming) -> Self {
        RaftService {
            raft,
            leadership,
            vote_hold: timing.election_timeout * 2,
        }
    }

    /// A leader's VIP lease is counted from its last confirmation round,
    /// but openraft refreshes a node's own leader lease only when it hears
    /// from a leader, never while it is one: a long-standing leader would
    /// grant a vote at once, and a new leader (and VIP owner) could exist
    /// while its fence still holds. Refuse, as followers do, until two
    /// election timeouts after the last confirmation.
    fn refuse_vote_while_leasing(&self) -> Result<(), Status> {
        match self.leadership.borrow().confirmed_at {
            Some(at) if at.elapsed() < self.vote_hold => Err(Status::unavailable(format!(
                "vote refused: this node was confirmed leader {:?} ago and its VIP lease may still be live",
                at.elapsed()
            ))),
            _ => Ok(()),
        }
    }
}

fn decode<T: DeserializeOwned>(request: &RaftRequest, what: &str) -> Result<T, Status> {
    postcard::from_bytes(&request.payload).map_err(|e| {
        Status::invalid_argument(format!(
            "undecodable {what} from node {}: {e} (are both nodes the same raftlb version?)",
            request.from
        ))
    })
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    let payload =
        postcard::to_allocvec(result).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(Response::new(RaftReply { payload }))
}

/// The node id the request claims to come from, for logs.
fn sender(request: &RaftRequest) -> NodeId {
    request.from
}

impl RaftService {
    /// Refuses a sender that is not in this node's membership (a node that
    /// was removed, or one configured with another's id). A node that has
    /// no membership yet (never initialized, or being added) hears anyone
    /// with the right credentials: that is how it learns the membership.
    fn check_sender(&self, request: &RaftRequest) -> Result<(), Status> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_none() || membership.get_node(&request.from).is_some() {
            return Ok(());
        }
        let members: Vec<String> = membership.nodes().map(|(id, _)| id.to_string()).collect();
        tracing::warn!(
            from = request.from,
            "refused Raft traffic from a node that is not a member"
        );
        Err(Status::permission_denied(format!(
            "node {} is not a member of this cluster (members: {}); add it with `raftlb ctl member add`",
            request.from,
            members.join(", ")
        )))
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        self.check_sender(&request)?;
        let rpc = decode(&request, "AppendEntries")?;
        let result = self.raft.append_entries(rpc).await;
        if let Err(e) = &result {
            tracing::debug!(from = sender(&request), error = %e, "append_entries refused");
        }
        reply(&result)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        self.check_sender(&request)?;
        self.refuse_vote_while_leasing()?;
        let rpc = decode(&request, "Vote")?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        self.check_sender(&request)?;
        let rpc = decode(&request, "InstallSnapshot")?;
        reply(&self.raft.install_snapshot(rpc).await)
    }
}
