//! A Rust client of the admin gRPC API, for tests that write thousands of
//! entries or time them (`raftlb ctl` starts a process per call). Speaks the
//! same service, with the same credentials, as `raftlb ctl`.

use crate::cluster::{CLUSTER_ID, TOKEN};
use raftlb_config::{ClusterState, Command};
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::{ReadRequest, StatusReply, StatusRequest, WriteRequest};
use raftlb_proto::{CLUSTER_ID_HEADER, CLUSTER_TOKEN_HEADER};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// An admin connection to one node.
#[derive(Debug, Clone)]
pub struct Admin {
    client: AdminClient<Channel>,
    timeout: Duration,
    cluster: &'static str,
    token: &'static str,
}

/// A write the node acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub index: u64,
    pub applied: bool,
}

impl Admin {
    /// A lazily connecting client; every call is bounded by `timeout`.
    pub fn new(address: &str, timeout: Duration) -> Admin {
        Self::with_credentials(address, timeout, CLUSTER_ID, TOKEN)
    }

    /// [`Admin::new`] for a cluster with other credentials (a
    /// [`Site`](crate::site::Site)'s, say).
    pub fn with_credentials(
        address: &str,
        timeout: Duration,
        cluster: &'static str,
        token: &'static str,
    ) -> Admin {
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .expect("address")
            .connect_timeout(Duration::from_millis(500))
            .timeout(timeout)
            .connect_lazy();
        Admin {
            client: AdminClient::new(channel).max_decoding_message_size(64 << 20),
            timeout,
            cluster,
            token,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(CLUSTER_ID_HEADER, self.cluster.parse().expect("ascii"));
        metadata.insert(CLUSTER_TOKEN_HEADER, self.token.parse().expect("ascii"));
        request.set_timeout(self.timeout);
        request
    }

    pub async fn write(&mut self, command: &Command) -> Result<Written, tonic::Status> {
        let command = postcard::to_allocvec(command).expect("encode");
        let reply = self
            .client
            .write(self.request(WriteRequest { command }))
            .await?
            .into_inner();
        Ok(Written {
            index: reply.log_index,
            applied: reply.applied,
        })
    }

    /// The node's state and its applied index.
    pub async fn read(&mut self, stale: bool) -> Result<(ClusterState, u64), tonic::Status> {
        let reply = self
            .client
            .read(self.request(ReadRequest { stale }))
            .await?
            .into_inner();
        let state = postcard::from_bytes(&reply.state).expect("decode state");
        Ok((state, reply.applied_index))
    }

    pub async fn status(&mut self) -> Result<StatusReply, tonic::Status> {
        Ok(self
            .client
            .status(self.request(StatusRequest {}))
            .await?
            .into_inner())
    }
}
