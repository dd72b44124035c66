//! The admin API (`proto/admin.proto`) every node serves beside Raft. Any
//! node takes a write: a follower forwards it once to the leader it knows,
//! and the call returns after the entry is committed and applied there.
//! Reads confirm leadership first (linearizable) unless `stale` is set.
//! Every wait is bounded by [`WRITE_TIMEOUT`]: without a quorum the caller
//! gets `Unavailable` with a sentence saying so, never a hang.

use super::auth::{AttachCredentials, Credentials};
use super::leadership::Leadership;
use super::network::{MAX_MESSAGE_BYTES, status_text};
use super::spread::SharedLeases;
use super::state_machine::Applied;
use super::sticky_admin::StickyAdmin;
use super::transfer;
use super::types::{Node, NodeId, Raft};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, ServerState};
use raftlb_config::{Command, Outcome, RaftTiming};
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::admin_server;
use raftlb_proto::admin::{
    AddMemberRequest, CampaignReply, CampaignRequest, DrainReply, DrainRequest, LeaseVipsReply,
    LeaseVipsRequest, Member, MembershipReply, ReadReply, ReadRequest, RemoveMemberRequest, SnapshotReply,
    SnapshotRequest, StatusReply, StatusRequest, StickyGetReply, StickyGetRequest, StickyStatsReply,
    StickyStatsRequest, TransferLeaderReply, TransferLeaderRequest, WriteReply, WriteRequest,
};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// How long a write, a linearizable read or a membership change may wait
/// for a quorum before the caller is told there is none.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Catching a new member up may take longer than one write.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a forwarded write waits for this node to apply it.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(2);
/// How often a write held back by a leadership transfer looks again.
const HANDOVER_POLL: Duration = Duration::from_millis(10);
/// The longest `snapshot` waits for the snapshot to be built.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Set on a forwarded call so it is never forwarded twice.
const FORWARDED_HEADER: &str = "x-raftlb-forwarded";

type LeaderClient = AdminClient<InterceptedService<Channel, AttachCredentials>>;

/// What leadership transfer and drain need.
#[derive(Clone, Debug)]
pub struct Handover {
    /// Set while this node, as leader, steps aside.
    pub standing_down: Arc<AtomicBool>,
    /// A witness never campaigns.
    pub witness: bool,
    /// Cancelled when an operator asks this node to drain and stop.
    pub drain: CancellationToken,
    /// Spread-VIP leases this node grants while it leads.
    pub leases: SharedLeases,
}

/// What `status` needs to say whether this node sees a quorum.
#[derive(Clone, Debug)]
pub struct QuorumView {
    pub leadership: watch::Receiver<Leadership>,
    pub timing: RaftTiming,
    /// When the node started: without a quorum since then if it never saw one.
    pub started: Instant,
    /// The VIPs this node holds, as the VIP manager publishes them.
    pub vips: watch::Receiver<Vec<String>>,
}

#[derive(Clone)]
pub struct AdminService {
    me: NodeId,
    raft: Raft,
    applied: watch::Receiver<Arc<Applied>>,
    credentials: Credentials,
    quorum: QuorumView,
    handover: Handover,
    sticky: StickyAdmin,
    /// The client to the last leader forwarded to, by its address.
    leader: Arc<Mutex<Option<(String, LeaderClient)>>>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl AdminService {
    pub fn new(
        me: NodeId,
        raft: Raft,
        applied: watch::Receiver<Arc<Applied>>,
        credentials: Credentials,
        quorum: QuorumView,
        handover: Handover,
        sticky: StickyAdmin,
    ) -> Self {
        AdminService {
            me,
            raft,
            applied,
            credentials,
            quorum,
            handover,
            sticky,
            leader: Arc::default(),
        }
    }

    /// A client to the leader `forward` names, refusing a second hop.
    fn leader_client(
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
        self.leader_at(&node.addr)
    }

    /// The cached client to the leader at `address` (one HTTP/2 channel,
    /// reused by forwarded calls and spread-VIP lease requests alike).
    fn leader_at(&self, address: &str) -> Result<LeaderClient, Status> {
        let mut cached = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, client)) = cached.as_ref()
            && known == address
        {
            return Ok(client.clone());
        }
        let client = self.connect(address)?;
        *cached = Some((address.to_string(), client.clone()));
        Ok(client)
    }

    /// A client to another node's admin API.
    fn connect(&self, address: &str) -> Result<LeaderClient, Status> {
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

    /// Set while this node, as leader, steps aside (transfer, drain).
    pub fn standing_down(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.handover.standing_down)
    }

    /// Asks the leader for the lease on `vips` (this node's spread VIPs);
    /// returns those granted.
    pub async fn ask_lease(&self, vips: &[std::net::IpAddr]) -> Result<Vec<std::net::IpAddr>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics
            .current_leader
            .and_then(|id| metrics.membership_config.membership().get_node(&id).cloned())
            .ok_or_else(|| Status::unavailable("no leader known"))?;
        let mut client = self.leader_at(&leader.addr)?;
        let request = LeaseVipsRequest {
            node_id: self.me,
            vips: vips.iter().map(ToString::to_string).collect(),
        };
        let reply = client.lease_vips(request).await?.into_inner();
        Ok(reply.granted.iter().filter_map(|v| v.parse().ok()).collect())
    }

    /// As leader, hands leadership to `to` (or the most caught-up voter)
    /// and returns the new leader; `Err(Ok(forward))` when this node is not
    /// the leader.
    pub async fn hand_over(
        &self,
        to: Option<NodeId>,
    ) -> Result<NodeId, Result<ForwardToLeader<NodeId, Node>, Status>> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            let leader_node = metrics
                .current_leader
                .and_then(|id| metrics.membership_config.membership().get_node(&id).cloned());
            return Err(Ok(ForwardToLeader {
                leader_id: metrics.current_leader,
                leader_node,
            }));
        }
        let candidates =
            transfer::candidates(&self.raft, self.me, to).map_err(|e| Err(Status::failed_precondition(e)))?;
        let membership = metrics.membership_config.membership().clone();
        let after = transfer::campaign_delay(self.quorum.timing);
        let mut reasons = Vec::new();
        let won = transfer::step_aside(&self.raft, &self.handover.standing_down, async {
            for candidate in &candidates {
                let Some(node) = membership.get_node(candidate) else {
                    continue;
                };
                let ask = async {
                    let mut client = self.connect(&node.addr)?;
                    let request = CampaignRequest {
                        after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                    };
                    client.campaign(request).await.map(|_| ())
                };
                match tokio::time::timeout(after + transfer::CAMPAIGN_TIMEOUT * 2, ask).await {
                    Ok(Ok(())) => return Some(*candidate),
                    Ok(Err(status)) => reasons.push(format!("node {candidate}: {}", status_text(&status))),
                    Err(_) => reasons.push(format!("node {candidate}: no answer")),
                }
            }
            None
        })
        .await
        .ok_or_else(|| Err(Status::aborted("a leadership transfer is already under way")))?;
        won.ok_or_else(|| {
            Err(Status::unavailable(format!(
                "leadership stays here: no candidate won ({})",
                reasons.join("; ")
            )))
        })
    }

    fn forwarded<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            FORWARDED_HEADER,
            tonic::metadata::AsciiMetadataValue::from_static("1"),
        );
        request
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
    pub async fn submit(&self, command: Command, forwarded: bool) -> Result<(u64, Outcome), Status> {
        // Encoded up front: `client_write` consumes the command, and a
        // follower must still send it on to the leader.
        let encoded = postcard::to_allocvec(&command)
            .map_err(|e| Status::internal(format!("cannot encode the command: {e}")))?;
        let handover = async {
            while self.handover.standing_down.load(Ordering::Acquire) {
                tokio::time::sleep(HANDOVER_POLL).await;
            }
        };
        if tokio::time::timeout(WRITE_TIMEOUT, handover).await.is_err() {
            return Err(Status::unavailable(format!(
                "a leadership transfer is still under way after {WRITE_TIMEOUT:?}; the write was not submitted"
            )));
        }
        bounded(WRITE_TIMEOUT, "write", async {
            let forward = match self.raft.client_write(command).await {
                Ok(written) => return Ok((written.log_id.index, written.data)),
                Err(e) => write_error(e)?,
            };
            let mut leader = self.leader_client(&forward, forwarded)?;
            let reply = leader
                .write(self.forwarded(WriteRequest { command: encoded }))
                .await
                .map_err(remote)?
                .into_inner();
            let outcome = postcard::from_bytes(&reply.outcome)
                .map_err(|e| Status::internal(format!("the leader's outcome is undecodable: {e}")))?;
            // Read your writes: this node answers once it has applied them
            // too (or, if it lags far behind, after a while anyway: the
            // write is committed either way).
            let index = reply.log_index;
            let mut applied = self.applied.clone();
            let caught_up = applied.wait_for(|a| a.last_applied.is_some_and(|id| id.index >= index));
            let _ = tokio::time::timeout(LOCAL_APPLY_WAIT, caught_up).await;
            Ok((index, outcome))
        })
        .await
    }

    fn local_read(&self) -> Result<Response<ReadReply>, Status> {
        let applied = Arc::clone(&self.applied.borrow());
        let state = postcard::to_allocvec(&applied.state)
            .map_err(|e| Status::internal(format!("cannot encode the state: {e}")))?;
        Ok(Response::new(ReadReply {
            state,
            applied_index: applied.last_applied.map_or(0, |id| id.index),
            node_id: self.me,
        }))
    }
}

fn was_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// Bounds `work` by `limit`, turning the timeout into a sentence.
async fn bounded<T>(
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

/// Maps openraft's write errors; `Ok(Some(forward))` means "ask the leader".
fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, Node>>,
) -> Result<ForwardToLeader<NodeId, Node>, Status> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => Ok(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Err(Status::failed_precondition(e.to_string()))
        }
        RaftError::Fatal(e) => Err(Status::internal(format!("this node's Raft has stopped: {e}"))),
    }
}

fn remote(status: Status) -> Status {
    let text = status_text(&status);
    Status::new(status.code(), format!("via leader: {text}"))
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn sticky_stats(
        &self,
        _request: Request<StickyStatsRequest>,
    ) -> Result<Response<StickyStatsReply>, Status> {
        Ok(Response::new(self.sticky.stats(self.me)))
    }

    async fn snapshot(&self, _request: Request<SnapshotRequest>) -> Result<Response<SnapshotReply>, Status> {
        let started = Instant::now();
        let mut metrics = self.raft.metrics();
        let target = metrics.borrow().last_applied;
        let fatal = |e: openraft::error::Fatal<NodeId>| Status::unavailable(format!("Raft has stopped: {e}"));
        self.raft.trigger().snapshot().await.map_err(fatal)?;
        let built = tokio::time::timeout(SNAPSHOT_TIMEOUT, async {
            loop {
                let snapshot = metrics.borrow_and_update().snapshot;
                if snapshot >= target {
                    return Ok(snapshot);
                }
                if metrics.changed().await.is_err() {
                    return Err(Status::unavailable("Raft has stopped"));
                }
            }
        })
        .await
        .map_err(|_| Status::deadline_exceeded(format!("no snapshot within {SNAPSHOT_TIMEOUT:?}")))??;
        let build_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let index = built.map_or(0, |id| id.index);
        if let Some(id) = built {
            self.raft.trigger().purge_log(id.index).await.map_err(fatal)?;
        }
        Ok(Response::new(SnapshotReply {
            index,
            bytes: self.sticky.snapshot_bytes(),
            build_ms,
        }))
    }

    async fn sticky_get(
        &self,
        request: Request<StickyGetRequest>,
    ) -> Result<Response<StickyGetReply>, Status> {
        let request = request.into_inner();
        let reply = self.sticky.get(&self.applied, &request.key, &request.pool)?;
        Ok(Response::new(reply))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched = metrics.replication.as_ref();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                address: node.addr.clone(),
                role: if voters.contains(id) { "voter" } else { "learner" }.to_string(),
                matched_index: matched
                    .and_then(|m| m.get(id))
                    .and_then(|log_id| log_id.map(|l| l.index))
                    .unwrap_or(0),
            })
            .collect();
        let leader_address = metrics
            .current_leader
            .and_then(|id| membership.get_node(&id))
            .map(|node| node.addr.clone())
            .unwrap_or_default();
        let state = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        Ok(Response::new(StatusReply {
            node_id: self.me,
            cluster_id: self.credentials.cluster_id().to_string(),
            state: state.to_string(),
            term: metrics.current_term,
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_address,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            members,
            millis_since_quorum_ack: metrics
                .millis_since_quorum_ack
                .map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            no_quorum_ms: self
                .quorum
                .leadership
                .borrow()
                .without_quorum(self.quorum.timing, self.quorum.started)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            vips: self.quorum.vips.borrow().clone(),
        }))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let forwarded = was_forwarded(&request);
        let command: Command = postcard::from_bytes(&request.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        #[cfg(feature = "failpoints")]
        if let Some(early) = crate::failpoint::ack_before_commit(&self.raft, &self.applied, &command).await {
            return Ok(Response::new(early));
        }
        let (log_index, outcome) = self.submit(command, forwarded).await?;
        Ok(Response::new(WriteReply {
            log_index,
            applied: outcome.is_applied(),
            rejected: outcome.rejection(),
            outcome: postcard::to_allocvec(&outcome)
                .map_err(|e| Status::internal(format!("cannot encode the outcome: {e}")))?,
        }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let forwarded = was_forwarded(&request);
        let message = request.into_inner();
        if message.stale {
            return self.local_read();
        }
        bounded(WRITE_TIMEOUT, "linearizable read", async {
            match self.raft.ensure_linearizable().await {
                Ok(_) => self.local_read(),
                Err(e) => {
                    let Some(forward) = e.forward_to_leader::<Node>().cloned() else {
                        return Err(Status::internal(format!("this node's Raft has stopped: {e}")));
                    };
                    let mut leader = self.leader_client(&forward, forwarded)?;
                    leader.read(self.forwarded(message)).await.map_err(remote)
                }
            }
        })
        .await
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let forwarded = was_forwarded(&request);
        let message = request.into_inner();
        if message.id == 0 {
            return Err(Status::invalid_argument("node ids start at 1"));
        }
        if message.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "invalid address \"{}\" (expected IP:PORT)",
                message.address
            )));
        }
        bounded(MEMBERSHIP_TIMEOUT, "membership change", async {
            let node = Node::new(message.address.clone());
            // As a learner first: it catches up without counting for quorum.
            if let Err(e) = self.raft.add_learner(message.id, node, true).await {
                let forward = write_error(e)?;
                let mut leader = self.leader_client(&forward, forwarded)?;
                return leader.add_member(self.forwarded(message)).await.map_err(remote);
            }
            let promote = ChangeMembers::AddVoterIds(BTreeSet::from([message.id]));
            match self.raft.change_membership(promote, false).await {
                Ok(written) => Ok(Response::new(MembershipReply {
                    log_index: written.log_id.index,
                })),
                Err(e) => Err(write_error(e).map_or_else(
                    |status| status,
                    |_| Status::unavailable("leadership changed while adding the member; retry"),
                )),
            }
        })
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        let forwarded = was_forwarded(&request);
        let message = request.into_inner();
        let to = (message.to != 0).then_some(message.to);
        match self.hand_over(to).await {
            Ok(leader_id) => Ok(Response::new(TransferLeaderReply { leader_id })),
            Err(Err(status)) => Err(status),
            Err(Ok(forward)) => {
                let mut leader = self.leader_client(&forward, forwarded)?;
                leader
                    .transfer_leader(self.forwarded(message))
                    .await
                    .map_err(remote)
            }
        }
    }

    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignReply>, Status> {
        if self.handover.witness {
            return Err(Status::failed_precondition("a witness never leads"));
        }
        // Never before the other voters' leases on the old leader can have
        // run out, whatever the caller asks.
        let least = transfer::campaign_delay(self.quorum.timing);
        let after = Duration::from_millis(request.into_inner().after_ms.min(10_000)).max(least);
        transfer::campaign(&self.raft, after)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(CampaignReply {}))
    }

    async fn lease_vips(
        &self,
        request: Request<LeaseVipsRequest>,
    ) -> Result<Response<LeaseVipsReply>, Status> {
        let message = request.into_inner();
        let fresh = self
            .quorum
            .leadership
            .borrow()
            .confirmed_at
            .is_some_and(|at| at.elapsed() < self.quorum.timing.election_timeout);
        if !fresh {
            return Err(Status::unavailable("not a leader confirmed by a quorum just now"));
        }
        let applied = Arc::clone(&self.applied.borrow());
        let granted: Vec<std::net::IpAddr> = message
            .vips
            .iter()
            .filter_map(|v| v.parse().ok())
            .filter(|vip| applied.state.vip_owner(*vip) == Some(message.node_id))
            .collect();
        self.handover
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(message.node_id, &granted);
        Ok(Response::new(LeaseVipsReply {
            granted: granted.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn drain(&self, _request: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        tracing::info!("drain requested through the admin API");
        self.handover.drain.cancel();
        Ok(Response::new(DrainReply { node_id: self.me }))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let forwarded = was_forwarded(&request);
        let message = request.into_inner();
        bounded(WRITE_TIMEOUT, "membership change", async {
            let metrics = self.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            let is_voter = membership.voter_ids().any(|id| id == message.id);
            if membership.get_node(&message.id).is_none() {
                return Err(Status::not_found(format!("node {} is not a member", message.id)));
            }
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([message.id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([message.id]))
            };
            match self.raft.change_membership(change, false).await {
                Ok(written) => Ok(Response::new(MembershipReply {
                    log_index: written.log_id.index,
                })),
                Err(e) => {
                    let forward = write_error(e)?;
                    let mut leader = self.leader_client(&forward, forwarded)?;
                    leader
                        .remove_member(self.forwarded(message))
                        .await
                        .map_err(remote)
                }
            }
        })
        .await
    }
}
