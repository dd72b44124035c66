//! Cluster credentials: the cluster id and shared token every Raft and admin
//! call carries as gRPC metadata. The server side refuses a call whose id or
//! token differs before reading its payload, with a message that says which
//! of the two is wrong; the client side attaches both to every call.

use raftlb_proto::{CLUSTER_ID_HEADER, CLUSTER_TOKEN_HEADER};
use std::sync::Arc;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The cluster id and token, ready to attach or check.
#[derive(Clone)]
pub struct Credentials {
    cluster_id: AsciiMetadataValue,
    token: AsciiMetadataValue,
    cluster_name: Arc<str>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cluster_id", &self.cluster_name)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Fails if either value cannot travel as gRPC metadata (non-ASCII).
    pub fn new(cluster_id: &str, token: &str) -> Result<Self, String> {
        let ascii = |what: &str, value: &str| {
            value
                .parse::<AsciiMetadataValue>()
                .map_err(|_| format!("the {what} must be printable ASCII"))
        };
        Ok(Credentials {
            cluster_id: ascii("cluster id", cluster_id)?,
            token: ascii("cluster token", token.trim())?,
            cluster_name: cluster_id.into(),
        })
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_name
    }

    /// Adds the id and token to an outgoing call.
    pub fn attach(&self, metadata: &mut MetadataMap) {
        metadata.insert(CLUSTER_ID_HEADER, self.cluster_id.clone());
        metadata.insert(CLUSTER_TOKEN_HEADER, self.token.clone());
    }

    /// Checks an incoming call's metadata.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let their_id = metadata.get(CLUSTER_ID_HEADER);
        if their_id != Some(&self.cluster_id) {
            let theirs = their_id.and_then(|v| v.to_str().ok()).unwrap_or("<none>");
            return Err(Status::permission_denied(format!(
                "cluster id mismatch: this node belongs to cluster \"{}\", the caller to \"{theirs}\"",
                self.cluster_name
            )));
        }
        let their_token = metadata
            .get(CLUSTER_TOKEN_HEADER)
            .map(AsciiMetadataValue::as_bytes);
        if !their_token.is_some_and(|t| constant_time_eq(t, self.token.as_bytes())) {
            return Err(Status::unauthenticated(format!(
                "cluster token mismatch: the caller's token for cluster \"{}\" is not this cluster's",
                self.cluster_name
            )));
        }
        Ok(())
    }
}

/// Compares without stopping at the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Server-side interceptor: refuses calls with the wrong id or token.
#[derive(Debug, Clone)]
pub struct RequireCredentials(pub Credentials);

impl Interceptor for RequireCredentials {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Err(status) = self.0.check(request.metadata()) {
            let caller = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(%caller, reason = status.message(), "refused a call");
            return Err(status);
        }
        Ok(request)
    }
}

/// Client-side interceptor: attaches the id and token.
#[derive(Debug, Clone)]
pub struct AttachCredentials(pub Credentials);

impl Interceptor for AttachCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.0.attach(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_id_and_wrong_token_are_told_apart() {
        let ours = Credentials::new("prod-lb", "s3cret").expect("credentials");
        let mut metadata = MetadataMap::new();
        ours.attach(&mut metadata);
        assert!(ours.check(&metadata).is_ok());

        let mut other_cluster = MetadataMap::new();
        Credentials::new("staging", "s3cret")
            .expect("credentials")
            .attach(&mut other_cluster);
        let refused = ours.check(&other_cluster).expect_err("other cluster");
        assert!(
            refused.message().contains("cluster id mismatch"),
            "{}",
            refused.message()
        );

        let mut other_token = MetadataMap::new();
        Credentials::new("prod-lb", "guess")
            .expect("credentials")
            .attach(&mut other_token);
        let refused = ours.check(&other_token).expect_err("other token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(
            refused.message().contains("token mismatch"),
            "{}",
            refused.message()
        );
        assert!(ours.check(&MetadataMap::new()).is_err());
    }
}
