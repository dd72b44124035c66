//! The way from this node to the Raft leader for the admin calls it cannot
//! serve itself: one cached HTTP/2 channel to the leader's admin API
//! (shared by forwarded calls and spread-VIP lease asks), the one-hop rule
//! (a forwarded call is marked and never forwarded again), and, during an
//! election, the wait for the next leader.

use super::admin_service::WRITE_TIMEOUT;
use super::auth::{AttachCredentials, Credentials};
use super::network::{MAX_MESSAGE_BYTES, chain_has, status_text};
use super::types::{Node, NodeId, Raft};
use openraft::error::ForwardToLeader;
use raftlb_proto::admin::admin_client::AdminClient;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// The least a call waits before trying a new leader again.
const LEADER_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Set on a forwarded call so it is never forwarded twice.
const FORWARDED_HEADER: &str = "x-raftlb-forwarded";

pub(crate) type LeaderClient = AdminClient<InterceptedService<Channel, AttachCredentials>>;

#[derive(Clone)]
pub(crate) struct LeaderLink {
    raft: Raft,
    credentials: Credentials,
    /// The client to the last leader forwarded to, by its address.
    cached: Arc<Mutex<Option<(String, LeaderClient)>>>,
}

impl LeaderLink {
    pub(crate) fn new(raft: Raft, credentials: Credentials) -> Self {
        LeaderLink {
            raft,
            credentials,
            cached: Arc::default(),
        }
    }

    /// A client to the leader `forward` names, refusing a second hop.
    pub(crate) fn client(
        &self,
        forward: &ForwardToLeader<NodeId, Node>,
        already_forwarded: bool,
    ) -> Result<LeaderClient, Status> {
        let Some(node) = &forward.leader_node else {
            return Err(Status::unavailable(
                "no leader: the cluster has no quorum right now (are a majority of voters up and connected?)",
            ));
        };
        if already_forwarded {
            return Err(Status::unavailable("leadership is changing; retry the request"));
        }
        self.at(&node.addr)
    }

    /// For a call this node cannot serve itself: the client to the leader
    /// `forward` names, or, while no leader is known (an election), `None`
    /// once one is, to try again; past `deadline`, the no-leader error.
    pub(crate) async fn client_or_wait(
        &self,
        forward: &ForwardToLeader<NodeId, Node>,
        already_forwarded: bool,
        deadline: Instant,
    ) -> Result<Option<LeaderClient>, Status> {
        if forward.leader_node.is_some() {
            return self.client(forward, already_forwarded).map(Some);
        }
        self.await_leader(None, deadline).await.map_err(|()| {
            Status::unavailable(format!(
                "no leader: none was elected within {WRITE_TIMEOUT:?} (are a majority of voters up and connected?)"
            ))
        })?;
        Ok(None)
    }

    /// A call to the leader failed: when it never left this node (the
    /// connection was refused: the leader is gone, the request was not
    /// delivered), waits for another leader to try again; any other error,
    /// or no other leader by `deadline`, is the caller's.
    pub(crate) async fn retry_if_never_sent(
        &self,
        status: Status,
        forward: &ForwardToLeader<NodeId, Node>,
        deadline: Instant,
    ) -> Result<(), Status> {
        if !chain_has::<tonic::ConnectError>(&status) {
            return Err(remote(status));
        }
        self.await_leader(forward.leader_id, deadline).await.map_err(|()| {
            let leader = forward.leader_id.map_or_else(String::new, |id| format!(" (node {id})"));
            Status::unavailable(format!(
                "no leader: the last one known{leader} refused the connection ({}) and no other was elected \
                 within {WRITE_TIMEOUT:?} (are a majority of voters up and connected?)",
                status_text(&status)
            ))
        })
    }

    /// Waits until this node knows a leader other than `not`, up to
    /// `deadline` (`Err` then, or when Raft has stopped). Returns after a
    /// short pause at least, so that a caller looping on it cannot spin.
    async fn await_leader(&self, not: Option<NodeId>, deadline: Instant) -> Result<(), ()> {
        let mut metrics = self.raft.metrics();
        let known = async {
            let known = metrics.wait_for(|m| m.current_leader.is_some() && m.current_leader != not);
            known.await.map(drop)
        };
        let pause = tokio::time::sleep(LEADER_RETRY_PAUSE);
        match tokio::time::timeout_at(deadline.into(), async { tokio::join!(known, pause).0 }).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(()),
        }
    }

    /// The cached client to the leader at `address`.
    pub(crate) fn at(&self, address: &str) -> Result<LeaderClient, Status> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, client)) = cached.as_ref()
            && known == address
        {
            return Ok(client.clone());
        }
        let client = self.connect(address)?;
        *cached = Some((address.to_string(), client.clone()));
        Ok(client)
    }

    /// A client to another node's admin API (not cached).
    pub(crate) fn connect(&self, address: &str) -> Result<LeaderClient, Status> {
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::internal(format!("node address \"{address}\": {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(
            AdminClient::with_interceptor(channel, AttachCredentials(self.credentials.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
    }
}

/// `message` marked as forwarded.
pub(crate) fn mark_forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::AsciiMetadataValue::from_static("1"),
    );
    request
}

/// Whether another node forwarded `request` here.
pub(crate) fn was_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// The leader's error, said to come from it.
pub(crate) fn remote(status: Status) -> Status {
    let text = status_text(&status);
    Status::new(status.code(), format!("via leader: {text}"))
}
