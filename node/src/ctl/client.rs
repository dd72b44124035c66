//! One node's admin API as `raftlb ctl` uses it: over mutual TLS with the
//! caller's certificate (see [`super::settings`]), every connect and call
//! bounded by a timeout, and every failure turned into a [`CallError`]
//! that says in one line what went wrong and where, without tonic's
//! "transport error" wrapping.

use crate::control::transport::{ConnectError, Dialer};
use crate::pki::Expect;
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::{
    AddMemberRequest, DrainReply, DrainRequest, MembershipReply, ReadReply, ReadRequest, RemoveMemberRequest,
    SnapshotReply, SnapshotRequest, StatusReply, StatusRequest, StickyGetReply, StickyGetRequest,
    StickyStatsReply, StickyStatsRequest, TransferLeaderReply, TransferLeaderRequest, WriteReply,
    WriteRequest,
};
use std::error::Error;
use std::fmt;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

/// The largest reply `raftlb ctl` takes (a whole cluster state).
const MAX_REPLY_BYTES: usize = 1 << 30;

/// Why a call to a node failed, phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// `--node` (or a member's address) is not something we can dial.
    BadAddress { address: String, reason: String },
    /// No connection, or it broke: the node is down, or not a raftlb node.
    Unreachable { address: String, reason: String },
    /// Connected, but no reply in time (typically: no quorum).
    NoAnswer { address: String, within: Duration },
    /// The node refused the call; its message says why (wrong token, …).
    Refused { message: String },
    /// Any other error the node answered with.
    Failed {
        address: String,
        code: Code,
        message: String,
    },
}

impl CallError {
    /// Classifies a failed call to `address` that was allowed `within`.
    pub fn from_status(address: &str, within: Duration, status: &Status) -> Self {
        let address = address.to_string();
        // Only errors raised in this process (transport, local timeout) have a source;
        // a status the node sent has none.
        let local = Error::source(status).is_some();
        if status.code() == Code::DeadlineExceeded || (local && chain_has::<tonic::TimeoutExpired>(status)) {
            return CallError::NoAnswer { address, within };
        }
        match status.code() {
            Code::Unavailable if local => CallError::Unreachable {
                address,
                reason: innermost(status),
            },
            Code::Unauthenticated | Code::PermissionDenied | Code::FailedPrecondition => CallError::Refused {
                message: status.message().to_string(),
            },
            code => CallError::Failed {
                address,
                code,
                message: if local {
                    innermost(status)
                } else {
                    status.message().to_string()
                },
            },
        }
    }

    /// The failure without the address, for a table row that already shows it.
    pub fn reason(&self) -> String {
        match self {
            CallError::BadAddress { reason, .. } => format!("invalid address: {reason}"),
            CallError::Unreachable { reason, .. } => reason.clone(),
            CallError::NoAnswer { within, .. } => {
                format!("no answer within {}", raftlb_config::duration::format(*within))
            }
            CallError::Refused { message } => message.clone(),
            CallError::Failed { code, message, .. } => format!("{}: {message}", code_name(*code)),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::BadAddress { address, reason } => {
                write!(f, "invalid node address \"{address}\": {reason}")
            }
            CallError::Unreachable { address, reason } => {
                write!(f, "cannot reach raftlb node at {address}: {reason}")
            }
            CallError::NoAnswer { address, within } => write!(
                f,
                "no answer from {address} within {} (no quorum?)",
                raftlb_config::duration::format(*within)
            ),
            CallError::Refused { message } => f.write_str(message),
            CallError::Failed {
                address,
                code,
                message,
            } => {
                write!(f, "{address}: {}: {message}", code_name(*code))
            }
        }
    }
}

impl std::error::Error for CallError {}

/// "NotFound" → "not found".
fn code_name(code: Code) -> String {
    let mut name = String::new();
    for c in format!("{code:?}").chars() {
        if c.is_uppercase() && !name.is_empty() {
            name.push(' ');
        }
        name.extend(c.to_lowercase());
    }
    name
}

/// The innermost cause's message ("Connection refused (os error 111)"),
/// skipping every wrapper that only says "transport error".
fn innermost(error: &(dyn Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

fn chain_has<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A connected admin client for one node.
#[derive(Debug, Clone)]
pub struct Client {
    address: String,
    timeout: Duration,
    inner: AdminClient<Channel>,
}

impl Client {
    /// Connects to `address` (`host:port`) within `timeout`, expecting
    /// `expect` to answer there.
    pub async fn connect(
        address: &str,
        dialer: &Dialer,
        expect: Expect,
        timeout: Duration,
    ) -> Result<Self, CallError> {
        let unreachable = |reason: String| CallError::Unreachable {
            address: address.to_string(),
            reason,
        };
        let channel = match tokio::time::timeout(timeout, dialer.connect(address, expect)).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(ConnectError::Address(reason))) => {
                return Err(CallError::BadAddress {
                    address: address.to_string(),
                    reason,
                });
            }
            Ok(Err(ConnectError::Transport(e))) => return Err(unreachable(innermost(&e))),
            Err(_) => {
                let within = raftlb_config::duration::format(timeout);
                return Err(unreachable(format!("no connection within {within}")));
            }
        };
        Ok(Client {
            address: address.to_string(),
            timeout,
            inner: AdminClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub async fn status(&mut self) -> Result<StatusReply, CallError> {
        let call = self.inner.status(StatusRequest {});
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn write(&mut self, command: Vec<u8>) -> Result<WriteReply, CallError> {
        let call = self.inner.write(WriteRequest { command });
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn read(&mut self, stale: bool) -> Result<ReadReply, CallError> {
        let call = self.inner.read(ReadRequest { stale });
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn add_member(&mut self, id: u64, address: String) -> Result<MembershipReply, CallError> {
        let call = self.inner.add_member(AddMemberRequest { id, address });
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn remove_member(&mut self, id: u64) -> Result<MembershipReply, CallError> {
        let call = self.inner.remove_member(RemoveMemberRequest { id });
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn transfer_leader(&mut self, to: Option<u64>) -> Result<TransferLeaderReply, CallError> {
        let call = self
            .inner
            .transfer_leader(TransferLeaderRequest { to: to.unwrap_or(0) });
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn snapshot(&mut self) -> Result<SnapshotReply, CallError> {
        let call = self.inner.snapshot(SnapshotRequest {});
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn sticky_stats(&mut self) -> Result<StickyStatsReply, CallError> {
        let call = self.inner.sticky_stats(StickyStatsRequest {});
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn sticky_get(&mut self, key: String, pool: String) -> Result<StickyGetReply, CallError> {
        let call = self.inner.sticky_get(StickyGetRequest { key, pool });
        bounded(&self.address, self.timeout, call).await
    }

    pub async fn drain(&mut self) -> Result<DrainReply, CallError> {
        let call = self.inner.drain(DrainRequest {});
        bounded(&self.address, self.timeout, call).await
    }
}

/// Waits for `call` at most `within`, whatever the transport does.
async fn bounded<T>(
    address: &str,
    within: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(within, call).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(CallError::from_status(address, within, &status)),
        Err(_) => Err(CallError::NoAnswer {
            address: address.to_string(),
            within,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "10.0.0.1:7000";
    const TEN_SECONDS: Duration = Duration::from_secs(10);

    fn classify(status: Status) -> CallError {
        CallError::from_status(ADDR, TEN_SECONDS, &status)
    }

    #[test]
    fn refusals_print_the_servers_message_alone() {
        let message = "cluster token mismatch: the caller's token for cluster \"prod\" is not this cluster's";
        for status in [
            Status::unauthenticated(message),
            Status::permission_denied(message),
            Status::failed_precondition(message),
        ] {
            assert_eq!(classify(status).to_string(), message);
        }
    }

    #[test]
    fn deadlines_say_no_answer_and_suggest_quorum() {
        let error = classify(Status::deadline_exceeded("whatever"));
        assert_eq!(
            error.to_string(),
            "no answer from 10.0.0.1:7000 within 10s (no quorum?)"
        );
        let local = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(matches!(classify(local), CallError::NoAnswer { .. }));
    }

    #[test]
    fn transport_failures_show_only_the_innermost_cause() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            classify(status).to_string(),
            "cannot reach raftlb node at 10.0.0.1:7000: Connection refused (os error 111)"
        );
    }

    #[test]
    fn other_server_errors_name_address_and_code() {
        let error = classify(Status::not_found("node 9 is not a member"));
        assert_eq!(
            error.to_string(),
            "10.0.0.1:7000: not found: node 9 is not a member"
        );
        assert_eq!(error.reason(), "not found: node 9 is not a member");
        // The node answering "no quorum" is reachable: say what it said.
        let error = classify(Status::unavailable(
            "no leader: the cluster has no quorum right now",
        ));
        assert_eq!(
            error.to_string(),
            "10.0.0.1:7000: unavailable: no leader: the cluster has no quorum right now"
        );
    }

    #[tokio::test]
    async fn an_unreachable_node_fails_fast_with_one_line() {
        let dialer = Dialer::new(crate::control::transport::Links::Cleartext, TEN_SECONDS);
        let error = Client::connect("127.0.0.1:1", &dialer, Expect::AnyNode, TEN_SECONDS)
            .await
            .expect_err("nothing listens on port 1");
        let line = error.to_string();
        assert!(
            line.starts_with("cannot reach raftlb node at 127.0.0.1:1: "),
            "{line}"
        );
        assert!(
            !line.contains("transport error") && !line.contains('\n'),
            "{line}"
        );
    }
}
