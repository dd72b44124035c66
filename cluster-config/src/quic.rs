//! QUIC on a listener: HTTP/3 beside an `https` listener's TCP (`http3`),
//! and routing by connection ID on a `udp` listener that carries QUIC to
//! its backends (`quic`). Format 5.

use crate::limits::MAX_CONNECTIONS;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A listener's QUIC settings; the default is none of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuicSpec {
    /// `https` only: also serve HTTP/3 over QUIC, with the listener's
    /// certificates, routes and limits.
    pub http3: bool,
    /// The UDP address HTTP/3 is served on; `None`: the listener's `bind`.
    pub http3_bind: Option<SocketAddr>,
    /// Accept 0-RTT (early data). A request in early data may be replayed
    /// by an attacker, so only safe methods are served from it; others
    /// get `425 Too Early` and the client sends them again after the
    /// handshake.
    pub early_data: bool,
    /// Handshakes under way (per worker) above which a new client must
    /// first prove its address with a Retry round trip; 0: always.
    pub retry_threshold: u32,
    /// `udp` only: the traffic is QUIC, and a client's datagrams follow its
    /// connection ID to the backend that serves it, whatever its address.
    pub route_by_connection_id: bool,
}

impl QuicSpec {
    pub const DEFAULT_RETRY_THRESHOLD: u32 = 128;

    /// Whether anything here is set.
    pub fn is_default(&self) -> bool {
        *self == QuicSpec::default()
    }

    /// Checks the numbers (the protocol rules are the listener's).
    pub fn check(&self) -> Result<(), String> {
        if self.retry_threshold > MAX_CONNECTIONS {
            return Err(format!(
                "http3_retry_threshold {} is more than {MAX_CONNECTIONS}",
                self.retry_threshold
            ));
        }
        if (self.http3_bind.is_some() || self.early_data) && !self.http3 {
            return Err("http3_bind and http3_early_data need http3 = true".to_string());
        }
        Ok(())
    }
}

impl Default for QuicSpec {
    fn default() -> Self {
        QuicSpec {
            http3: false,
            http3_bind: None,
            early_data: false,
            retry_threshold: QuicSpec::DEFAULT_RETRY_THRESHOLD,
            route_by_connection_id: false,
        }
    }
}
