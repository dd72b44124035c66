//! A Rust client of the admin gRPC API, for tests that write thousands of
//! entries or time them (`raftlb ctl` starts a process per call). Speaks the
//! same service over the same mutual TLS as `raftlb ctl` (its own dialer),
//! as the cluster's `admin` client certificate.

use crate::cluster::CLUSTER_ID;
use raftlb_config::{ClusterState, Command};
use raftlb_node::control::transport::{Dialer, Links};
use raftlb_node::pki::{Expect, Keyring};
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::{AddMemberRequest, ReadRequest, StatusReply, StatusRequest, WriteRequest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tonic::transport::Channel;

/// An admin connection to one node.
#[derive(Debug, Clone)]
pub struct Admin {
    client: AdminClient<Channel>,
    timeout: Duration,
}

/// The admin client certificate of cluster `cluster`, loaded once.
fn admin_keyring(cluster: &str) -> Arc<Keyring> {
    static LOADED: OnceLock<Mutex<HashMap<String, Arc<Keyring>>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Arc::clone(loaded.entry(cluster.to_string()).or_insert_with(|| {
        let pki = crate::pki::shared(cluster);
        Keyring::load(pki.client_files("admin")).expect("the test admin certificate")
    }))
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
        Self::with_credentials(address, timeout, CLUSTER_ID)
    }

    /// [`Admin::new`] for another cluster (a [`Site`](crate::site::Site)'s, say).
    pub fn with_credentials(address: &str, timeout: Duration, cluster: &str) -> Admin {
        Self::over(Links::Tls(admin_keyring(cluster)), address, timeout)
    }

    /// [`Admin::new`] for a cluster with `insecure_cleartext = true`.
    pub fn cleartext(address: &str, timeout: Duration) -> Admin {
        Self::over(Links::Cleartext, address, timeout)
    }

    fn over(links: Links, address: &str, timeout: Duration) -> Admin {
        let dialer = Dialer::new(links, Duration::from_millis(500));
        let channel = dialer.lazy(address, Expect::AnyNode).expect("address");
        Admin {
            client: AdminClient::new(channel).max_decoding_message_size(64 << 20),
            timeout,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    pub async fn write(&mut self, command: &Command) -> Result<Written, tonic::Status> {
        self.write_bytes(postcard::to_allocvec(command).expect("encode"))
            .await
    }

    /// Writes whatever `command` holds, encoded or not (hostile input).
    pub async fn write_bytes(&mut self, command: Vec<u8>) -> Result<Written, tonic::Status> {
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

    /// Asks to add node `id` at `address` as a member (bounded by the
    /// client's timeout, like every call; the leader goes on trying).
    pub async fn add_member(&mut self, id: u64, address: &str) -> Result<u64, tonic::Status> {
        let request = AddMemberRequest {
            id,
            address: address.to_string(),
        };
        Ok(self
            .client
            .add_member(self.request(request))
            .await?
            .into_inner()
            .log_index)
    }

    pub async fn status(&mut self) -> Result<StatusReply, tonic::Status> {
        Ok(self
            .client
            .status(self.request(StatusRequest {}))
            .await?
            .into_inner())
    }
}
