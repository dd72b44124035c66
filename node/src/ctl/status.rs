//! `raftlb ctl status`: ask one node for the membership, then ask every
//! member for its own view, concurrently and each with a short timeout, so
//! one dead node costs two seconds rather than hiding the others. The
//! result is a plain [`ClusterStatus`] that `format` prints as a table and
//! `--json` prints as is.

use super::client::Client;
use crate::control::transport::Dialer;
use crate::pki::Expect;
use raftlb_config::Formats;
use raftlb_proto::admin::StatusReply;
use serde::Serialize;
use std::time::Duration;
use tokio::task::JoinSet;

/// The longest wait for any one member beyond the node first asked.
pub const PER_NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster as its members describe themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    /// The leader by the leader's own account if it answered, else by the first node's.
    pub leader: Option<LeaderInfo>,
    pub term: u64,
    /// The format version every member reads, as the leader (else the
    /// first node) has applied it.
    pub cluster_version: u32,
    /// Members in id order.
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderInfo {
    pub id: u64,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub id: u64,
    pub address: String,
    /// "voter" or "learner".
    pub role: String,
    /// What the member said, or why it could not be asked.
    #[serde(flatten)]
    pub view: MemberView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MemberView {
    Answered {
        /// "leader", "follower", "candidate", "learner" or "shutdown".
        state: String,
        term: u64,
        last_log_index: u64,
        applied_index: u64,
        /// 0 while the member sees a quorum; else for how long it has not.
        no_quorum_ms: u64,
        /// The VIPs it holds.
        vips: Vec<String>,
        /// The format versions its binary reads and writes ("1–2").
        formats: String,
        /// Its process id (0: a release that does not say), which an
        /// in-place upgrade changes.
        pid: u32,
    },
    Unreachable {
        unreachable: String,
    },
}

impl MemberView {
    fn of(reply: &StatusReply) -> Self {
        MemberView::Answered {
            state: reply.state.clone(),
            term: reply.term,
            last_log_index: reply.last_log_index,
            applied_index: reply.applied_index,
            no_quorum_ms: reply.no_quorum_ms,
            vips: reply.vips.clone(),
            formats: Formats::announced(reply.format_min, reply.format_max).to_string(),
            pid: reply.pid,
        }
    }
}

/// The cluster version a reply states (0, from a release before versions: 1).
fn cluster_version(reply: &StatusReply) -> u32 {
    reply.cluster_version.max(1)
}

/// Asks `first` (already connected) and then every other member it lists.
pub async fn gather(first: &mut Client, dialer: &Dialer, timeout: Duration) -> Result<ClusterStatus, String> {
    let first_reply = first.status().await.map_err(|e| e.to_string())?;
    let per_node = timeout.min(PER_NODE_TIMEOUT);
    let mut asks = JoinSet::new();
    for member in first_reply.members.iter().filter(|m| m.id != first_reply.node_id) {
        let (id, address, dialer) = (member.id, member.address.clone(), dialer.clone());
        asks.spawn(async move {
            let reply = match Client::connect(&address, &dialer, Expect::Node(id), per_node).await {
                Ok(mut client) => client.status().await,
                Err(e) => Err(e),
            };
            (id, reply)
        });
    }
    let mut replies = vec![(first_reply.node_id, Ok(first_reply.clone()))];
    while let Some(joined) = asks.join_next().await {
        replies.push(joined.map_err(|e| format!("internal error asking a member: {e}"))?);
    }
    Ok(assemble(&first_reply, replies))
}

/// Combines the first node's membership with each member's own answer.
pub fn assemble(
    first: &StatusReply,
    replies: Vec<(u64, Result<StatusReply, super::client::CallError>)>,
) -> ClusterStatus {
    let reply_of = |id: u64| replies.iter().find(|(r, _)| *r == id).map(|(_, reply)| reply);
    let mut members: Vec<MemberStatus> = first
        .members
        .iter()
        .map(|m| MemberStatus {
            id: m.id,
            address: m.address.clone(),
            role: m.role.clone(),
            view: match reply_of(m.id) {
                Some(Ok(reply)) => MemberView::of(reply),
                Some(Err(e)) => MemberView::Unreachable {
                    unreachable: e.reason(),
                },
                None => MemberView::Unreachable {
                    unreachable: "not asked".to_string(),
                },
            },
        })
        .collect();
    members.sort_by_key(|m| m.id);
    // The leader's own reply is the most current account of leader and term.
    let leader_reply = replies
        .iter()
        .filter_map(|(_, reply)| reply.as_ref().ok())
        .filter(|reply| reply.state == "leader")
        .max_by_key(|reply| reply.term);
    let version = leader_reply.map_or_else(|| cluster_version(first), cluster_version);
    let (leader, term) = match leader_reply {
        Some(reply) => {
            let address = first
                .members
                .iter()
                .find(|m| m.id == reply.node_id)
                .map_or_else(|| reply.leader_address.clone(), |m| m.address.clone());
            (
                Some(LeaderInfo {
                    id: reply.node_id,
                    address,
                }),
                reply.term,
            )
        }
        None if first.leader_id != 0 => (
            Some(LeaderInfo {
                id: first.leader_id,
                address: first.leader_address.clone(),
            }),
            first.term,
        ),
        None => (None, first.term),
    };
    ClusterStatus {
        cluster_id: first.cluster_id.clone(),
        leader,
        term,
        cluster_version: version,
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::client::CallError;
    use raftlb_proto::admin::Member;

    fn reply(id: u64, state: &str, term: u64, leader: u64) -> StatusReply {
        StatusReply {
            node_id: id,
            cluster_id: "prod".to_string(),
            state: state.to_string(),
            term,
            leader_id: leader,
            leader_address: if leader == 0 {
                String::new()
            } else {
                format!("10.0.0.{leader}:7000")
            },
            last_log_index: 40 + id,
            applied_index: 40,
            members: (1..=3)
                .map(|m| Member {
                    id: m,
                    address: format!("10.0.0.{m}:7000"),
                    role: "voter".to_string(),
                    matched_index: 0,
                    format_min: 1,
                    format_max: 2,
                })
                .collect(),
            millis_since_quorum_ack: -1,
            no_quorum_ms: 0,
            vips: Vec::new(),
            format_min: 1,
            format_max: if id == 1 { 1 } else { 2 },
            cluster_version: 1,
            pid: 4242,
        }
    }

    #[test]
    fn every_member_gets_its_own_row_and_the_leader_speaks_for_itself() {
        // Node 3 still believes in an old leader; node 2 leads in a newer term.
        let first = reply(3, "follower", 4, 1);
        let down = CallError::Unreachable {
            address: "10.0.0.1:7000".to_string(),
            reason: "Connection refused (os error 111)".to_string(),
        };
        let status = assemble(
            &first,
            vec![
                (3, Ok(first.clone())),
                (2, Ok(reply(2, "leader", 5, 2))),
                (1, Err(down)),
            ],
        );
        assert_eq!(
            status.leader,
            Some(LeaderInfo {
                id: 2,
                address: "10.0.0.2:7000".to_string()
            })
        );
        assert_eq!(status.term, 5);
        assert_eq!(status.members.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            status.members[0].view,
            MemberView::Unreachable {
                unreachable: "Connection refused (os error 111)".to_string()
            }
        );
        assert!(
            matches!(&status.members[1].view, MemberView::Answered { state, term: 5, .. } if state == "leader")
        );
    }

    #[test]
    fn without_a_leader_the_first_nodes_view_stands() {
        let first = reply(1, "candidate", 9, 0);
        let status = assemble(&first, vec![(1, Ok(first.clone()))]);
        assert_eq!(status.leader, None);
        assert_eq!(status.term, 9);
        assert!(
            matches!(&status.members[1].view, MemberView::Unreachable { unreachable } if unreachable == "not asked")
        );
    }

    #[test]
    fn json_shows_answers_and_failures_flat() {
        let first = reply(1, "leader", 2, 1);
        let status = assemble(&first, vec![(1, Ok(first.clone()))]);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["leader"]["id"], 1);
        assert_eq!(json["members"][0]["state"], "leader");
        assert_eq!(json["members"][0]["last_log_index"], 41);
        assert_eq!(json["members"][0]["formats"], "1");
        assert_eq!(json["cluster_version"], 1);
        assert_eq!(json["members"][1]["unreachable"], "not asked");
    }
}
