//! The client half of node-to-node Raft: openraft's [`RaftNetwork`] over the
//! tonic `Raft` service of `proto/raft.proto`. Requests and replies are
//! postcard bytes inside protobuf, over mutual TLS that expects the target
//! node's own certificate at the other end ([`Dialer`]). A refused call
//! (a certificate the peer does not accept, a sender that is not a member)
//! and an unreachable peer are logged with what went wrong, at most once
//! per [`LOG_EVERY`] per peer, since openraft retries many times a second.
//! A batch of entries larger than the message limit is not sent: openraft
//! is told to send fewer at a time (`PayloadTooLarge`). Every request says
//! this node's format versions and the cluster version it has applied, and
//! every reply's formats are recorded ([`Versions`]).

use super::election::{PreVoteAnswer, PreVoteRequest};
use super::state_machine::Applied;
use super::transport::Dialer;
use super::types::{Node, NodeId, TypeConfig};
use super::versions::{REFUSES_TO_JOIN, Versions};
use crate::pki::Expect;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raftlb_config::Formats;
use raftlb_proto::raft::RaftRequest;
use raftlb_proto::raft::raft_client::RaftClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often one peer's repeated failure is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

type Client = RaftClient<tonic::transport::Channel>;
/// A peer's client, or why there is none (an address that cannot be dialled).
type Dialled = Result<Client, String>;

/// Makes a [`Peer`] whenever openraft asks: one per replication stream, and
/// one per election or leadership check. Peers to the same address share one
/// HTTP/2 channel, so frequent checks (the VIP lease renews through them)
/// cost a request, not a connection.
#[derive(Debug, Clone)]
pub struct Network {
    me: NodeId,
    dialer: Dialer,
    max_message_bytes: usize,
    /// One channel per peer (id and address: a node's certificate is
    /// checked against the id the membership gives its address).
    channels: Arc<Mutex<HashMap<(NodeId, String), Dialled>>>,
    versions: Arc<Versions>,
    /// Where requests read the cluster version they carry.
    applied: watch::Receiver<Arc<Applied>>,
    /// The vote lease every request asks of its receiver, in ms (see
    /// [`super::election::LeaderContact`]).
    vote_lease_ms: u32,
}

impl Network {
    pub fn new(
        me: NodeId,
        dialer: Dialer,
        max_message_bytes: usize,
        versions: Arc<Versions>,
        applied: watch::Receiver<Arc<Applied>>,
        vote_lease: Duration,
    ) -> Self {
        Network {
            me,
            dialer,
            max_message_bytes,
            channels: Arc::default(),
            versions,
            applied,
            vote_lease_ms: u32::try_from(vote_lease.as_millis()).unwrap_or(u32::MAX),
        }
    }
}

impl Network {
    /// The shared channel to `target` at `address`, dialled lazily.
    fn client(&self, target: NodeId, address: &str) -> Dialled {
        let limit = self.max_message_bytes;
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((target, address.to_string()))
            .or_insert_with(|| {
                let channel = self.dialer.lazy(address, Expect::Node(target))?;
                Ok(RaftClient::new(channel)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit))
            })
            .clone()
    }

    /// Asks `target` whether it would vote for this node now. A node of a
    /// release without pre-vote answers Unimplemented: it would, as far as
    /// this asking goes (it applies its own lease to the vote itself).
    pub async fn pre_vote(
        &self,
        target: NodeId,
        address: &str,
        request: &PreVoteRequest,
    ) -> Result<PreVoteAnswer, String> {
        let mut client = self.client(target, address)?;
        let payload = postcard::to_allocvec(request).map_err(|e| format!("cannot encode a pre-vote: {e}"))?;
        let formats = self.versions.this();
        let request = RaftRequest {
            from: self.me,
            payload,
            format_min: u32::from(formats.min),
            format_max: u32::from(formats.max),
            cluster_version: u32::from(self.applied.borrow().state.cluster_version()),
            vote_lease_ms: 0,
        };
        match client.pre_vote(request).await {
            Ok(reply) => raftlb_config::proposal::decode_carrier(&reply.into_inner().payload)
                .map_err(|e| format!("undecodable pre-vote answer: {e}")),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                Ok(PreVoteAnswer::granted_by_earlier_release())
            }
            Err(status) => Err(status_text(&status)),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            me: self.me,
            target,
            address: node.addr.clone(),
            client: self.client(target, &node.addr),
            max_message_bytes: self.max_message_bytes,
            vote_lease_ms: self.vote_lease_ms,
            last_logged: None,
            versions: Arc::clone(&self.versions),
            applied: self.applied.clone(),
        }
    }
}

/// One replication target.
#[derive(Debug)]
pub struct Peer {
    me: NodeId,
    target: NodeId,
    address: String,
    client: Result<Client, String>,
    max_message_bytes: usize,
    vote_lease_ms: u32,
    last_logged: Option<Instant>,
    versions: Arc<Versions>,
    applied: watch::Receiver<Arc<Applied>>,
}

/// Why a call did not produce the peer's answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CallError(String);

enum Failure {
    /// Could not reach the peer: openraft backs off.
    Unreachable(CallError),
    /// Reached it, but the call failed (refused credentials, bad payload).
    Network(CallError),
    /// Too big to send as one message.
    TooLarge(usize),
}

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RpcKind,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match self
            .exchange::<Req, Result<Resp, RaftError<NodeId, E>>>(kind, request, option)
            .await
        {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(Failure::Unreachable(e)) => {
                self.log_failure(&e);
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(Failure::Network(e)) => {
                self.log_failure(&e);
                Err(RPCError::Network(NetworkError::new(&e)))
            }
            Err(Failure::TooLarge(size)) => Err(self.too_large(kind, size)),
        }
    }

    async fn exchange<Req: Serialize, Reply: DeserializeOwned>(
        &mut self,
        kind: RpcKind,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Reply, Failure> {
        let client = match &mut self.client {
            Ok(client) => client,
            Err(e) => return Err(Failure::Network(CallError(e.clone()))),
        };
        let payload = postcard::to_allocvec(request)
            .map_err(|e| Failure::Network(CallError(format!("cannot encode {kind:?}: {e}"))))?;
        // Room for the protobuf and gRPC framing around the payload.
        if payload.len() + 1024 > self.max_message_bytes {
            return Err(Failure::TooLarge(payload.len()));
        }
        let formats = self.versions.this();
        let mut request = tonic::Request::new(RaftRequest {
            from: self.me,
            payload,
            format_min: u32::from(formats.min),
            format_max: u32::from(formats.max),
            cluster_version: u32::from(self.applied.borrow().state.cluster_version()),
            vote_lease_ms: self.vote_lease_ms,
        });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            RpcKind::AppendEntries { .. } => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Failure::Unreachable(CallError(format!("unreachable: {}", status_text(&status))))
            }
            code => {
                if code == tonic::Code::FailedPrecondition
                    && let Some(reason) = status.message().strip_prefix(REFUSES_TO_JOIN)
                {
                    self.versions.refused(self.target, reason);
                }
                Failure::Network(CallError(format!("refused: {}", status.message())))
            }
        })?;
        let reply = reply.into_inner();
        self.versions.answered(
            self.target,
            Formats::announced(reply.format_min, reply.format_max),
        );
        raftlb_config::proposal::decode_carrier(&reply.payload)
            .map_err(|e| Failure::Network(CallError(format!("undecodable {kind:?} reply: {e}"))))
    }

    /// Asks openraft to send half as many entries; a single entry or a
    /// snapshot chunk that is too large cannot be split, and is a network
    /// error (logged) until the limit is raised.
    fn too_large<E: std::error::Error>(
        &mut self,
        kind: RpcKind,
        size: usize,
    ) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
        if let RpcKind::AppendEntries { entries } = kind
            && entries > 1
        {
            return RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries as u64 / 2));
        }
        let error = CallError(format!(
            "{kind:?} of {size} bytes is over [cluster] max_message_bytes ({})",
            self.max_message_bytes
        ));
        self.log_failure(&error);
        RPCError::Network(NetworkError::new(&error))
    }

    fn log_failure(&mut self, error: &CallError) {
        let due = self.last_logged.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            self.last_logged = Some(Instant::now());
            tracing::warn!(peer = self.target, address = %self.address, "Raft peer {error} (retrying with backoff)");
        }
    }
}

/// The innermost cause of a transport failure, without tonic's wrapping.
pub fn status_text(status: &tonic::Status) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut text = status.message().to_string();
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text
}

#[derive(Debug, Clone, Copy)]
enum RpcKind {
    AppendEntries { entries: usize },
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let kind = RpcKind::AppendEntries {
            entries: rpc.entries.len(),
        };
        self.call(kind, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RpcKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RpcKind::Vote, &rpc, &option).await
    }
}
