//! The first membership ([`form_cluster`]) and `ctl member add|remove`:
//! membership changes, made by the leader (this
//! node, or the one it knows, once). A new member joins as a learner,
//! catches up without counting for quorum, then becomes a voter; one that
//! refuses to take part (a release that cannot read the cluster's version)
//! is taken out again and the call says why. A removed
//! member leaves the membership altogether, and with it goes the right of
//! its certificate to take part (see [`super::authz`]).

use super::leader_link::{LeaderLink, Redirect, forwarded};
use super::types::{Node, NodeId, Raft};
use super::versions::Versions;
use super::writer::{WRITE_TIMEOUT, bounded, write_error};
use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use raftlb_config::PeerAddress;
use raftlb_proto::admin::{AddMemberRequest, MembershipReply, RemoveMemberRequest};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Catching a new member up may take longer than one write.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a join under way looks whether the joiner refused.
const REFUSAL_POLL: Duration = Duration::from_millis(100);

/// Changes who is in the cluster.
#[derive(Clone)]
pub struct Membership {
    pub raft: Raft,
    pub link: LeaderLink,
    pub versions: Arc<Versions>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").finish_non_exhaustive()
    }
}

impl Membership {
    pub async fn add(
        &self,
        message: AddMemberRequest,
        forwarded_here: bool,
    ) -> Result<MembershipReply, Status> {
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
            // (openraft's own wait for a learner gives up after 500 ms and
            // goes on: a voter that never caught up would count for quorum.)
            let here = match self.raft.add_learner(message.id, node, false).await {
                Ok(added) => match self.caught_up(message.id, added.log_id.index).await {
                    Ok(()) => self.promote(message.id).await,
                    Err(failed) => Err(failed),
                },
                Err(e) => Err(write_error(e)),
            };
            self.link
                .here_or_at_leader(here, forwarded_here, |mut leader| async move {
                    Ok(leader.add_member(forwarded(message)).await?.into_inner())
                })
                .await
        })
        .await
    }

    /// Waits until the learner `id` holds the log up to `index` (the entry
    /// that added it); a learner that refuses to take part is taken out.
    async fn caught_up(&self, id: NodeId, index: u64) -> Result<(), Redirect> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(reason) = self.versions.refusal(id) {
                return Err(self.take_out(id, &reason).await);
            }
            let (leads, matched) = {
                let now = metrics.borrow();
                let matched = (now.replication.as_ref())
                    .and_then(|replication| replication.get(&id).copied().flatten())
                    .map(|log_id| log_id.index);
                (now.current_leader == Some(now.id), matched)
            };
            if !leads {
                return Err(Redirect::Failed(Status::unavailable(
                    "leadership changed while the new member caught up; it is a learner: retry",
                )));
            }
            if matched.is_some_and(|matched| matched >= index) {
                return Ok(());
            }
            if let Ok(Err(_)) = tokio::time::timeout(REFUSAL_POLL, metrics.changed()).await {
                return Err(Redirect::Failed(Status::unavailable(
                    "the node stopped while the new member caught up",
                )));
            }
        }
    }

    /// Takes the learner `id`, which refused to join for `reason`, out of
    /// the membership again (once its addition has committed), and says so.
    async fn take_out(&self, id: NodeId, reason: &str) -> Redirect {
        let remove = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
        let after = loop {
            match self.raft.change_membership(remove.clone(), false).await {
                Ok(_) => break "it is not a member".to_string(),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) => tokio::time::sleep(REFUSAL_POLL).await,
                Err(e) => {
                    break format!(
                        "taking it out again failed ({e}): remove it with `ctl member remove {id}`"
                    );
                }
            }
        };
        tracing::warn!(node = id, reason, after, "a joining node refused to take part");
        Redirect::Failed(Status::failed_precondition(format!(
            "node {id} refuses to join: {reason}; {after}"
        )))
    }

    async fn promote(&self, id: u64) -> Result<MembershipReply, Redirect> {
        let promote = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        match self.raft.change_membership(promote, false).await {
            Ok(written) => Ok(MembershipReply {
                log_index: written.log_id.index,
            }),
            // The learner is in; leadership moved before the promotion.
            Err(e) => Err(match write_error(e) {
                Redirect::ToLeader(_) => Redirect::Failed(Status::unavailable(
                    "leadership changed while adding the member; retry",
                )),
                failed => failed,
            }),
        }
    }

    pub async fn remove(
        &self,
        message: RemoveMemberRequest,
        forwarded_here: bool,
    ) -> Result<MembershipReply, Status> {
        bounded(WRITE_TIMEOUT, "membership change", async {
            let metrics = self.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            if membership.get_node(&message.id).is_none() {
                return Err(Status::not_found(format!("node {} is not a member", message.id)));
            }
            let change = if membership.voter_ids().any(|id| id == message.id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([message.id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([message.id]))
            };
            let here = match self.raft.change_membership(change, false).await {
                Ok(written) => Ok(MembershipReply {
                    log_index: written.log_id.index,
                }),
                Err(e) => Err(write_error(e)),
            };
            self.link
                .here_or_at_leader(here, forwarded_here, |mut leader| async move {
                    Ok(leader.remove_member(forwarded(message)).await?.into_inner())
                })
                .await
        })
        .await
    }
}

/// First start of an initial voter: propose the initial membership. Every
/// initial voter does this with the same member list, which openraft
/// accepts; on any later start the log is not empty and nothing happens.
pub async fn form_cluster(
    raft: &Raft,
    me: NodeId,
    address: Option<PeerAddress>,
    peers: &BTreeMap<u64, PeerAddress>,
) {
    match raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "Raft stopped before the cluster formed");
            return;
        }
    }
    let members: BTreeMap<NodeId, Node> = if peers.is_empty() {
        let address = address.map(|a| a.to_string()).unwrap_or_default();
        BTreeMap::from([(me, Node::new(address))])
    } else if peers.contains_key(&me) {
        peers
            .iter()
            .map(|(id, a)| (*id, Node::new(a.to_string())))
            .collect()
    } else {
        tracing::info!(
            "not an initial voter: waiting to be added (raftlb ctl member add {me} {})",
            address.map(|a| a.to_string()).unwrap_or_default()
        );
        return;
    };
    let voters = members.len();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(voters, "formed the cluster"),
        Err(e) => tracing::debug!(error = %e, "initialize declined (already formed)"),
    }
}
