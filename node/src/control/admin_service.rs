//! The admin API (`proto/admin.proto`) every node serves beside Raft: a
//! thin gRPC face over the pieces that do the work. Who may call each
//! method is settled before a call gets here ([`super::authz`]).
//!
//! - writes and reads: [`Writer`] (through the leader, bounded waits);
//! - `AddMember`, `RemoveMember`: [`Membership`];
//! - `TransferLeader`, `Campaign`, `Drain`: [`Handover`];
//! - `LeaseVips`: [`LeaseDesk`];
//! - `Status`: [`StatusView`]; `StickyStats`, `StickyGet`: [`StickyAdmin`];
//! - `Observe`: the status page's [`Observer`];
//! - `Snapshot`: here.
//!
//! A write a client makes through this node is recorded in this node's
//! events with the client's name.

use super::authz;
use super::leader_link::{LeaderLink, forwarded, was_forwarded};
use super::membership::Membership;
use super::spread::LeaseDesk;
use super::state_machine::Applied;
use super::status::StatusView;
use super::sticky_admin::StickyAdmin;
use super::transfer::Handover;
use super::transport::{Caller, Peer};
use super::types::{NodeId, Raft};
use super::writer::Writer;
use crate::events::Kind;
use crate::pki::Subject;
use crate::status_page::local::Observer;
use raftlb_config::Command;
use raftlb_proto::admin::admin_server;
use raftlb_proto::admin::{
    AddMemberRequest, CampaignReply, CampaignRequest, DrainReply, DrainRequest, LeaseVipsReply,
    LeaseVipsRequest, MembershipReply, ObserveReply, ObserveRequest, ReadReply, ReadRequest,
    RemoveMemberRequest, SnapshotReply, SnapshotRequest, StatusReply, StatusRequest, StickyGetReply,
    StickyGetRequest, StickyStatsReply, StickyStatsRequest, TransferLeaderReply, TransferLeaderRequest,
    WriteReply, WriteRequest,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// The longest `snapshot` waits for the snapshot to be built.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `snapshot` waits for the log it covers to be purged.
const PURGE_WAIT: Duration = Duration::from_secs(5);

/// Everything the admin API answers with.
#[derive(Clone)]
pub struct AdminService {
    pub me: NodeId,
    pub raft: Raft,
    pub applied: watch::Receiver<Arc<Applied>>,
    pub writer: Writer,
    pub link: LeaderLink,
    pub membership: Membership,
    pub handover: Handover,
    pub leases: LeaseDesk,
    pub status: StatusView,
    pub sticky: StickyAdmin,
    pub observer: Observer,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.status.reply()))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let forwarded_here = was_forwarded(&request);
        let who = caller_name(Caller::of(&request));
        let command = Command::decode(&request.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        // The file's checks, before anything is proposed, by the node the
        // client called (a node passing a write on checked it already, and
        // a node's own batched proposals are checked one by one as they
        // apply); apply repeats them, so an entry that bypassed this is
        // refused, not applied.
        if !forwarded_here {
            command
                .validate()
                .map_err(|e| Status::invalid_argument(format!("refused: {e}")))?;
        }
        #[cfg(feature = "failpoints")]
        if let Some(early) = crate::failpoint::ack_before_commit(&self.raft, &self.applied, &command).await {
            return Ok(Response::new(early));
        }
        let said = (!forwarded_here).then(|| command.to_string());
        let (log_index, outcome) = self.writer.submit(command, forwarded_here).await?;
        if let Some(said) = said {
            self.observer
                .events
                .record(Kind::Admin, admin_event(&said, &who, &outcome.rejection()));
        }
        Ok(Response::new(WriteReply {
            log_index,
            applied: outcome.is_applied(),
            rejected: outcome.rejection(),
            outcome: postcard::to_allocvec(&outcome)
                .map_err(|e| Status::internal(format!("cannot encode the outcome: {e}")))?,
        }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let forwarded_here = was_forwarded(&request);
        let stale = request.into_inner().stale;
        self.writer.read(stale, forwarded_here).await.map(Response::new)
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let forwarded_here = was_forwarded(&request);
        let reply = self.membership.add(request.into_inner(), forwarded_here).await?;
        Ok(Response::new(reply))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let forwarded_here = was_forwarded(&request);
        let reply = self
            .membership
            .remove(request.into_inner(), forwarded_here)
            .await?;
        Ok(Response::new(reply))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        let forwarded_here = was_forwarded(&request);
        let message = request.into_inner();
        let to = (message.to != 0).then_some(message.to);
        let here = self
            .handover
            .hand_over(to)
            .await
            .map(|leader_id| TransferLeaderReply { leader_id });
        let reply = self
            .link
            .here_or_at_leader(here, forwarded_here, |mut leader| async move {
                Ok(leader.transfer_leader(forwarded(message)).await?.into_inner())
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignReply>, Status> {
        self.handover.campaign(request.into_inner().after_ms).await?;
        Ok(Response::new(CampaignReply {}))
    }

    async fn drain(&self, _request: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        tracing::info!("drain requested through the admin API");
        self.handover.drain.cancel();
        Ok(Response::new(DrainReply { node_id: self.me }))
    }

    async fn lease_vips(
        &self,
        request: Request<LeaseVipsRequest>,
    ) -> Result<Response<LeaseVipsReply>, Status> {
        let message = request.get_ref();
        authz::sender_is_caller(Caller::of(&request), message.node_id)?;
        let granted = self.leases.grant(message.node_id, &message.vips)?;
        Ok(Response::new(LeaseVipsReply {
            granted: granted.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn sticky_stats(
        &self,
        _request: Request<StickyStatsRequest>,
    ) -> Result<Response<StickyStatsReply>, Status> {
        Ok(Response::new(self.sticky.stats(self.me)))
    }

    async fn sticky_get(
        &self,
        request: Request<StickyGetRequest>,
    ) -> Result<Response<StickyGetReply>, Status> {
        let request = request.into_inner();
        let reply = self.sticky.get(&self.applied, &request.key, &request.pool)?;
        Ok(Response::new(reply))
    }

    async fn observe(&self, _request: Request<ObserveRequest>) -> Result<Response<ObserveReply>, Status> {
        Ok(Response::new(self.observer.reply()))
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
            // The purge waits for replication still reading those entries;
            // answer once it is done, so a follower that comes back later
            // needs the snapshot (bounded: a purge still pending is fine).
            let _ = tokio::time::timeout(PURGE_WAIT, async {
                while metrics
                    .borrow_and_update()
                    .purged
                    .is_none_or(|purged| purged.index < id.index)
                {
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
        }
        Ok(Response::new(SnapshotReply {
            index,
            bytes: self.sticky.snapshot_bytes(),
            build_ms,
        }))
    }
}

/// Who made a call, for the events: the client's name, or the node.
fn caller_name(caller: Option<&Caller>) -> String {
    match caller.map(|c| (&c.peer, c.address)) {
        Some((Peer::Certified(identity), _)) => match &identity.subject {
            Subject::Client { name, role } => format!("client \"{name}\" ({})", role.name()),
            Subject::Node(id) => format!("node {id}"),
            Subject::Ca => "the CA".to_string(),
        },
        Some((_, Some(address))) => address.ip().to_string(),
        _ => "an unidentified caller".to_string(),
    }
}

/// The event line of a write: what, by whom, and whether it was refused.
fn admin_event(command: &str, who: &str, rejected: &str) -> String {
    match rejected.is_empty() {
        true => format!("{command} by {who}"),
        false => format!("{command} by {who}: refused: {rejected}"),
    }
}
