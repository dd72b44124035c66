//! How a node passes on what it cannot serve itself: to the leader it
//! knows, once. [`LeaderLink::here_or_at_leader`] is the one place where a
//! call served here either ends or goes on to the leader: a call that was
//! itself passed on is never passed on again (leadership is moving; the
//! caller retries), and one that finds no leader known fails at once with
//! a sentence saying so. The channel to the leader is kept while the
//! leader stays the same (forwarded writes and spread-VIP lease asks
//! share it), and it is mutual TLS expecting that leader's own certificate.

use super::authz::FORWARDED_HEADER;
use super::network::status_text;
use super::transport::Dialer;
use super::types::{Node, NodeId, Raft};
use crate::pki::Expect;
use openraft::error::ForwardToLeader;
use raftlb_proto::admin::admin_client::AdminClient;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Another node's admin API.
pub type NodeClient = AdminClient<Channel>;

/// Why a call could not be finished on this node.
#[derive(Debug)]
pub enum Redirect {
    /// This node does not lead; openraft names the leader it knows.
    ToLeader(ForwardToLeader<NodeId, Node>),
    /// It failed here, for good.
    Failed(Status),
}

impl From<Status> for Redirect {
    fn from(status: Status) -> Self {
        Redirect::Failed(status)
    }
}

/// A member's client, by the member's id and address.
type Reached = ((NodeId, String), NodeClient);

/// Reaches the leader and other members on a caller's behalf.
#[derive(Clone)]
pub struct LeaderLink {
    raft: Raft,
    dialer: Dialer,
    max_message_bytes: usize,
    /// The client to the last leader reached.
    leader: Arc<Mutex<Option<Reached>>>,
}

impl std::fmt::Debug for LeaderLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderLink").finish_non_exhaustive()
    }
}

impl LeaderLink {
    pub fn new(raft: Raft, dialer: Dialer, max_message_bytes: usize) -> LeaderLink {
        LeaderLink {
            raft,
            dialer,
            max_message_bytes,
            leader: Arc::default(),
        }
    }

    /// A new client to member `id` at `address`.
    pub fn member(&self, id: NodeId, address: &str) -> Result<NodeClient, Status> {
        let channel = self
            .dialer
            .lazy(address, Expect::Node(id))
            .map_err(Status::internal)?;
        Ok(AdminClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// The client to the leader this node knows now.
    pub fn leader(&self) -> Result<NodeClient, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics
            .current_leader
            .and_then(|id| Some((id, metrics.membership_config.membership().get_node(&id)?.clone())));
        match leader {
            Some((id, node)) => self.leader_at(id, &node.addr),
            None => Err(no_leader()),
        }
    }

    fn leader_at(&self, id: NodeId, address: &str) -> Result<NodeClient, Status> {
        let mut cached = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, client)) = cached.as_ref()
            && known.0 == id
            && known.1 == address
        {
            return Ok(client.clone());
        }
        let client = self.member(id, address)?;
        *cached = Some(((id, address.to_string()), client.clone()));
        Ok(client)
    }

    /// Finishes a call begun here: its result if this node could serve
    /// it, else `there` run once against the leader openraft named.
    /// `forwarded` says the call was itself passed on by another node.
    pub async fn here_or_at_leader<T, There>(
        &self,
        here: Result<T, Redirect>,
        forwarded: bool,
        there: impl FnOnce(NodeClient) -> There,
    ) -> Result<T, Status>
    where
        There: Future<Output = Result<T, Status>>,
    {
        let forward = match here {
            Ok(done) => return Ok(done),
            Err(Redirect::Failed(status)) => return Err(status),
            Err(Redirect::ToLeader(forward)) => forward,
        };
        let (Some(id), Some(node)) = (forward.leader_id, &forward.leader_node) else {
            return Err(no_leader());
        };
        if forwarded {
            return Err(Status::unavailable("leadership is changing; retry the request"));
        }
        let client = self.leader_at(id, &node.addr)?;
        there(client).await.map_err(|status| {
            let text = status_text(&status);
            Status::new(status.code(), format!("via leader: {text}"))
        })
    }
}

fn no_leader() -> Status {
    Status::unavailable(
        "no leader: the cluster has no quorum right now (are a majority of voters up and connected?)",
    )
}

/// `message` as a call passed on by this node.
pub fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::AsciiMetadataValue::from_static("1"),
    );
    request
}

/// Whether `request` was passed on by another node.
pub fn was_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}
