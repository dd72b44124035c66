//! The client half of node-to-node Raft: openraft's [`RaftNetwork`] over the
//! tonic `Raft` service of `proto/raft.proto`. Requests and replies are
//! postcard bytes inside protobuf; every call carries the cluster
//! credentials. A refused call (wrong cluster id or token) and an unreachable
//! peer are logged with what went wrong, at most once per
//! [`LOG_EVERY`] per peer, since openraft retries many times a second.

use super::auth::{AttachCredentials, Credentials};
use super::types::{Node, NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raftlb_proto::raft::RaftRequest;
use raftlb_proto::raft::raft_client::RaftClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message either side accepts (snapshot chunks, entry batches).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// How often one peer's repeated failure is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

type Client = RaftClient<InterceptedService<Channel, AttachCredentials>>;

/// Makes a [`Peer`] whenever openraft asks: one per replication stream, and
/// one per election or leadership check. Peers to the same address share one
/// HTTP/2 channel, so frequent checks (the VIP lease renews through them)
/// cost a request, not a connection.
#[derive(Debug, Clone)]
pub struct Network {
    me: NodeId,
    credentials: Credentials,
    channels: Arc<Mutex<HashMap<String, Result<Client, String>>>>,
}

impl Network {
    pub fn new(me: NodeId, credentials: Credentials) -> Self {
        Network {
            me,
            credentials,
            channels: Arc::default(),
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
            client: self
                .channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(node.addr.clone())
                .or_insert_with(|| connect_lazy(&node.addr, &self.credentials))
                .clone(),
            last_logged: None,
        }
    }
}

/// A gRPC client to another node's Raft service; connects on first use and
/// reconnects by itself.
pub fn connect_lazy(address: &str, credentials: &Credentials) -> Result<Client, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("invalid peer address \"{address}\": {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect_lazy();
    Ok(
        RaftClient::with_interceptor(channel, AttachCredentials(credentials.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// One replication target.
#[derive(Debug)]
pub struct Peer {
    me: NodeId,
    target: NodeId,
    address: String,
    client: Result<Client, String>,
    last_logged: Option<Instant>,
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
        let mut request = tonic::Request::new(RaftRequest {
            from: self.me,
            payload,
        });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            RpcKind::AppendEntries => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Failure::Unreachable(CallError(format!("unreachable: {}", status_text(&status))))
            }
            _ => Failure::Network(CallError(format!("refused: {}", status.message()))),
        })?;
        postcard::from_bytes(&reply.into_inner().payload)
            .map_err(|e| Failure::Network(CallError(format!("undecodable {kind:?} reply: {e}"))))
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
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RpcKind::AppendEntries, &rpc, &option).await
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
