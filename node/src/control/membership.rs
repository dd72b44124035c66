//! `ctl member add|remove`: membership changes, made by the leader (this
//! node, or the one it knows, once). A new member joins as a learner,
//! catches up without counting for quorum, then becomes a voter. A removed
//! member leaves the membership altogether, and with it goes the right of
//! its certificate to take part (see [`super::authz`]).

use super::leader_link::{LeaderLink, Redirect, forwarded};
use super::types::{Node, Raft};
use super::writer::{WRITE_TIMEOUT, bounded, write_error};
use openraft::ChangeMembers;
use raftlb_proto::admin::{AddMemberRequest, MembershipReply, RemoveMemberRequest};
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::Status;

/// Catching a new member up may take longer than one write.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// Changes who is in the cluster.
#[derive(Clone)]
pub struct Membership {
    pub raft: Raft,
    pub link: LeaderLink,
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
            let here = match self.raft.add_learner(message.id, node, true).await {
                Ok(_) => self.promote(message.id).await,
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
