//! Who may call what on a node's Raft and admin port. One table
//! ([`need`]) names what every gRPC method requires; one layer
//! ([`Authorize`]) in front of both services checks the caller's
//! certificate identity (from the connection's handshake, see
//! [`super::transport`]) against it before the call is decoded:
//!
//! | method | who |
//! |---|---|
//! | Raft `AppendEntries`, `Vote`, `InstallSnapshot`, `PreVote` | a member node (and the message's sender must be that node: [`sender_is_caller`]) |
//! | admin `Campaign`, `LeaseVips` | a member node |
//! | admin `Status`, `Observe`, `Read`, `StickyStats`, `StickyGet` | a client certificate (`read` or `admin`), or a member node |
//! | every other admin call (writes, membership, transfer, drain, snapshot) | an `admin` client, or a member node forwarding a call it was given ([`FORWARDED_HEADER`]) |
//!
//! A node certificate is not an admin key: a node may only pass on what
//! a client asked of it. Every certificate must be of this node's
//! cluster, and a node's must belong to a current member, so removing a
//! member revokes its certificate with no CA change. In a cleartext
//! cluster (loopback only) nobody is identified and everything is allowed.
//! Each refusal is a sentence for the caller and, at most every few
//! seconds per caller and reason, a line in this node's log.

use super::transport::{Caller, Peer};
use super::types::{NodeId, Raft};
use crate::pki::{Identity, Role, Subject};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::Status;

/// Set on a call one node passes on to another (to the leader), so that
/// it is never passed on twice and a node certificate may carry it.
pub const FORWARDED_HEADER: &str = "x-raftlb-forwarded";
/// How often one caller's same refusal is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What a gRPC method requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Node-to-node Raft.
    Raft,
    /// Calls only nodes make of each other.
    Node,
    /// Reading the cluster's state and status.
    Read,
    /// Changing anything.
    Write,
}

/// What `path` (`/package.Service/Method`) requires; `None` for a method
/// this node does not know (refused).
pub fn need(path: &str) -> Option<Need> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    match (service, method) {
        ("raftlb.raft.v1.Raft", "AppendEntries" | "Vote" | "InstallSnapshot" | "PreVote") => Some(Need::Raft),
        ("raftlb.admin.v1.Admin", method) => match method {
            "Campaign" | "LeaseVips" => Some(Need::Node),
            "Status" | "Observe" | "Read" | "StickyStats" | "StickyGet" => Some(Need::Read),
            "Write" | "AddMember" | "RemoveMember" | "TransferLeader" | "Drain" | "Snapshot" => {
                Some(Need::Write)
            }
            _ => None,
        },
        _ => None,
    }
}

/// The judge: this node's cluster and its current membership.
#[derive(Clone)]
pub struct Policy {
    cluster: Arc<str>,
    raft: Raft,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Policy {
    pub fn new(cluster: &str, raft: Raft) -> Policy {
        Policy {
            cluster: cluster.into(),
            raft,
        }
    }

    /// Whether `caller` may call `path`; `forwarded` when the call carries
    /// [`FORWARDED_HEADER`].
    pub fn check(&self, caller: Option<&Caller>, path: &str, forwarded: bool) -> Result<(), Status> {
        decide(&self.cluster, caller, path, forwarded, |id| self.member(id))
    }

    /// Whether node `id` is a member (voter, learner or witness) now. A
    /// node with no membership yet (never formed, or being added) hears
    /// any node of its cluster: that is how it learns the membership.
    fn member(&self, id: NodeId) -> Result<(), Status> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_none() || membership.get_node(&id).is_some() {
            return Ok(());
        }
        let members: Vec<String> = membership.nodes().map(|(id, _)| id.to_string()).collect();
        Err(Status::permission_denied(format!(
            "node {id} is not a member of cluster \"{}\" (members: {}), so its certificate is refused; \
             add it with `raftlb ctl member add {id} ADDRESS`",
            self.cluster,
            members.join(", ")
        )))
    }
}

/// The rules of the table above, for `caller` in `cluster`; `member`
/// says whether a node id is a current member.
fn decide(
    cluster: &str,
    caller: Option<&Caller>,
    path: &str,
    forwarded: bool,
    member: impl Fn(NodeId) -> Result<(), Status>,
) -> Result<(), Status> {
    let method = path.rsplit('/').next().unwrap_or(path);
    let Some(need) = need(path) else {
        return Err(Status::unimplemented(format!("unknown method {path}")));
    };
    let identity = match caller.map(|c| &c.peer) {
        Some(Peer::Cleartext) => return Ok(()),
        Some(Peer::Certified(identity)) => identity,
        Some(Peer::Unidentified(reason)) => {
            return Err(Status::permission_denied(format!(
                "your certificate is signed by the cluster's CA, but {reason}"
            )));
        }
        // Every connection is accepted with a caller; kept total.
        None => return Err(Status::unauthenticated("the connection has no identity")),
    };
    if identity.cluster != cluster {
        return Err(Status::permission_denied(format!(
            "your certificate is the certificate of {identity}, but this node belongs to cluster \"{cluster}\""
        )));
    }
    match (&identity.subject, need) {
        (Subject::Node(id), Need::Raft | Need::Node | Need::Read) => member(*id),
        (Subject::Node(id), Need::Write) if forwarded => member(*id),
        (Subject::Node(id), Need::Write) => Err(Status::permission_denied(format!(
            "node {id}'s certificate may not call {method}: a node certificate is not an admin key; \
             use a client certificate with role admin (raftlb certs client --name NAME --role admin)"
        ))),
        (Subject::Client { .. }, Need::Read)
        | (
            Subject::Client {
                role: Role::Admin, ..
            },
            Need::Write,
        ) => Ok(()),
        (
            Subject::Client {
                name,
                role: Role::Read,
            },
            Need::Write,
        ) => Err(Status::permission_denied(format!(
            "client \"{name}\" has role read, which may not call {method} (a write); use a certificate with role admin"
        ))),
        (Subject::Client { .. } | Subject::Ca, Need::Raft | Need::Node) => Err(Status::permission_denied(
            format!("only the cluster's nodes may call {method}; the caller is {identity}"),
        )),
        (Subject::Ca, _) => Err(Status::permission_denied(
            "a CA certificate is not a client certificate".to_string(),
        )),
    }
}

/// A Raft message's claimed sender must be the node its certificate names.
pub fn sender_is_caller(caller: Option<&Caller>, from: NodeId) -> Result<(), Status> {
    match caller.map(|c| &c.peer) {
        Some(Peer::Certified(Identity {
            subject: Subject::Node(id),
            ..
        })) if *id != from => Err(Status::permission_denied(format!(
            "the message says it is from node {from}, but it came with node {id}'s certificate"
        ))),
        _ => Ok(()),
    }
}

/// Logs `message` unless the same one, about the same address, was logged
/// in the last [`LOG_EVERY`].
pub fn log_refusal(address: Option<IpAddr>, message: &str) {
    type Logged = HashMap<(Option<IpAddr>, String), Instant>;
    static LAST: OnceLock<Mutex<Logged>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if last.len() >= 4096 {
        last.retain(|_, at| at.elapsed() < LOG_EVERY);
    }
    let key = (address, message.to_string());
    if last.get(&key).is_some_and(|at| at.elapsed() < LOG_EVERY) {
        return;
    }
    last.insert(key, Instant::now());
    tracing::warn!("refused: {message}");
}

/// The tower layer in front of the Raft and admin services.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: Policy,
}

impl<S> Authorize<S> {
    pub fn layer(policy: Policy) -> impl tower::Layer<S, Service = Authorize<S>> + Clone {
        tower::layer::layer_fn(move |inner| Authorize {
            inner,
            policy: policy.clone(),
        })
    }
}

impl<S, B> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let caller = request.extensions().get::<Caller>();
        let forwarded = request.headers().contains_key(FORWARDED_HEADER);
        match self.policy.check(caller, request.uri().path(), forwarded) {
            Ok(()) => futures_util::future::Either::Left(self.inner.call(request)),
            Err(status) => {
                let who = caller.map_or_else(String::new, |c| match &c.peer {
                    Peer::Certified(identity) => format!("{identity}"),
                    _ => "a caller".to_string(),
                });
                log_refusal(
                    caller.and_then(|c| c.address).map(|a| a.ip()),
                    &format!("{} from {who}: {}", request.uri().path(), status.message()),
                );
                futures_util::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_both_protos_has_a_rule() {
        for (service, proto) in [
            (
                "raftlb.raft.v1.Raft",
                include_str!("../../../proto/proto/raft.proto"),
            ),
            (
                "raftlb.admin.v1.Admin",
                include_str!("../../../proto/proto/admin.proto"),
            ),
        ] {
            let methods: Vec<&str> = proto
                .lines()
                .filter_map(|line| line.trim().strip_prefix("rpc "))
                .filter_map(|rest| rest.split('(').next())
                .collect();
            assert!(methods.len() >= 3, "{service}: {methods:?}");
            for method in methods {
                assert!(
                    need(&format!("/{service}/{method}")).is_some(),
                    "{service}/{method} has no rule"
                );
            }
        }
        assert_eq!(need("/raftlb.admin.v1.Admin/Nope"), None);
        assert_eq!(need("/grpc.health.v1.Health/Check"), None);
        assert_eq!(need("/raftlb.admin.v1.Admin/Write"), Some(Need::Write));
        assert_eq!(need("/raftlb.admin.v1.Admin/Read"), Some(Need::Read));
    }

    fn certified(identity: Identity) -> Caller {
        Caller {
            address: None,
            peer: Peer::Certified(identity),
        }
    }

    /// Nodes 1 to 3 are members.
    fn judge(identity: Identity, method: &str, forwarded: bool) -> Result<(), String> {
        let members = |id: NodeId| {
            (1..=3)
                .contains(&id)
                .then_some(())
                .ok_or_else(|| Status::permission_denied(format!("node {id} is not a member")))
        };
        decide(
            "prod",
            Some(&certified(identity)),
            &format!("/raftlb.admin.v1.Admin/{method}"),
            forwarded,
            members,
        )
        .map_err(|status| status.message().to_string())
    }

    #[test]
    fn roles_nodes_and_clusters() {
        let admin = Identity::client("prod", "alice", Role::Admin);
        let reader = Identity::client("prod", "bob", Role::Read);
        assert_eq!(judge(admin.clone(), "Write", false), Ok(()));
        assert_eq!(judge(reader.clone(), "Status", false), Ok(()));
        assert_eq!(judge(reader.clone(), "Read", false), Ok(()));
        assert_eq!(judge(reader.clone(), "Observe", false), Ok(()));
        let refused = judge(reader, "Write", false).expect_err("read role writes");
        assert!(refused.contains("role read"), "{refused}");
        assert!(
            judge(admin.clone(), "Campaign", false).is_err(),
            "clients never campaign"
        );

        let node = Identity::node("prod", 2);
        let refused = judge(node.clone(), "Write", false).expect_err("node writes");
        assert!(refused.contains("not an admin key"), "{refused}");
        assert_eq!(judge(node.clone(), "Write", true), Ok(()), "a member forwarding");
        assert_eq!(judge(node, "LeaseVips", false), Ok(()));
        let removed = judge(Identity::node("prod", 4), "Write", true).expect_err("not a member");
        assert!(removed.contains("not a member"), "{removed}");

        let other = judge(Identity::client("staging", "alice", Role::Admin), "Status", false)
            .expect_err("another cluster");
        assert!(
            other.contains("cluster \"staging\"") && other.contains("\"prod\""),
            "{other}"
        );
        let cleartext = Caller {
            address: None,
            peer: Peer::Cleartext,
        };
        assert!(
            decide(
                "prod",
                Some(&cleartext),
                "/raftlb.admin.v1.Admin/Write",
                false,
                |_| Ok(())
            )
            .is_ok()
        );
    }

    #[test]
    fn a_forged_sender_is_refused() {
        let caller = Caller {
            address: None,
            peer: Peer::Certified(Identity::node("c", 2)),
        };
        assert!(sender_is_caller(Some(&caller), 2).is_ok());
        let refused = sender_is_caller(Some(&caller), 3).expect_err("node 2 claiming to be 3");
        assert!(refused.message().contains("from node 3"), "{}", refused.message());
        let cleartext = Caller {
            address: None,
            peer: Peer::Cleartext,
        };
        assert!(sender_is_caller(Some(&cleartext), 3).is_ok());
    }
}
