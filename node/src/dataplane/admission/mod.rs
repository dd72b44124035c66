//! Admission: who may connect to a listener, and how much one client may
//! do there — checked at accept, before any TLS or HTTP work, and at each
//! HTTP request. The HTTP server counts its own refusals of slow and greedy
//! clients here too ([`Admitted::count`]), so `/metrics` has one counter of
//! every client turned away, by listener and reason.
//!
//! A listener's [`ListenerGuard`] outlives view rebuilds (it is kept while
//! the listener exists) and holds its [`SourceTable`] and its refusal
//! counters; its [`AclTable`] is rebuilt only when its rules change. Both
//! are read through the current view, so `ctl acl` and `ctl listener
//! limits` take effect on the next connection, with no restart.
//! [`admit`] answers a new connection (or UDP session) with an
//! [`Admitted`], which counts it against its source until dropped, or with
//! the [`Refusal`] it was counted under.

pub mod acl;
pub mod sources;

pub use acl::AclTable;
use raftlb_config::ClientLimits;
pub use sources::{Exceeded, SourceKey, SourceTable};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a client was turned away; each has its counter in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An ACL rule denies its source.
    Acl,
    /// Its source holds `limits.connections` already.
    Connections,
    /// Its source opened connections faster than `limits.connection_rate`.
    ConnectionRate,
    /// Its source sent requests faster than `limits.request_rate`.
    RequestRate,
    /// A request head not whole within `header_read_timeout`: closed.
    HeaderTimeout,
    /// A request body stalled for `body_timeout`: 408.
    BodyTimeout,
    /// A request body slower than `body_min_rate`: 408.
    BodyRate,
    /// A write to the client stuck for `send_timeout`: closed.
    SendTimeout,
    /// An HTTP/2 stream waited past the pool's `response_timeout` for one
    /// of its connection's `max_backend_streams`: 503.
    BackendStreams,
    /// `accept_proxy`: a peer outside `proxy_trusted`: closed.
    ProxyUntrusted,
    /// `accept_proxy`: no valid PROXY header within `header_read_timeout`: closed.
    ProxyHeader,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::Acl,
        Refusal::Connections,
        Refusal::ConnectionRate,
        Refusal::RequestRate,
        Refusal::HeaderTimeout,
        Refusal::BodyTimeout,
        Refusal::BodyRate,
        Refusal::SendTimeout,
        Refusal::BackendStreams,
        Refusal::ProxyUntrusted,
        Refusal::ProxyHeader,
    ];

    /// The `reason` label of `raftlb_client_refusals_total`.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Acl => "acl",
            Refusal::Connections => "connections",
            Refusal::ConnectionRate => "connection_rate",
            Refusal::RequestRate => "request_rate",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BodyRate => "body_rate",
            Refusal::SendTimeout => "send_timeout",
            Refusal::BackendStreams => "backend_streams",
            Refusal::ProxyUntrusted => "proxy_untrusted",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
}

impl From<Exceeded> for Refusal {
    fn from(exceeded: Exceeded) -> Refusal {
        match exceeded {
            Exceeded::Connections => Refusal::Connections,
            Exceeded::ConnectionRate => Refusal::ConnectionRate,
            Exceeded::RequestRate { .. } => Refusal::RequestRate,
        }
    }
}

/// What one listener keeps across view rebuilds: its sources and the
/// count of each refusal.
#[derive(Debug, Default)]
pub struct ListenerGuard {
    sources: SourceTable,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl ListenerGuard {
    /// Clients refused for `reason` since the listener started on this node.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Relaxed)
    }

    pub fn sources(&self) -> &SourceTable {
        &self.sources
    }

    /// Counts one refusal for `reason`.
    pub fn count(&self, reason: Refusal) -> Refusal {
        self.refused[reason as usize].fetch_add(1, Relaxed);
        reason
    }
}

/// Whether a new connection (UDP: session) from `source` may be served:
/// the ACL allows it and its source is within `limits`. `now_ms` is
/// [`health::now_ms`](crate::health::now_ms).
pub fn admit(
    guard: &Arc<ListenerGuard>,
    acl: &AclTable,
    limits: &ClientLimits,
    source: IpAddr,
    now_ms: u64,
) -> Result<Admitted, Refusal> {
    if !acl.allows(source) {
        return Err(guard.count(Refusal::Acl));
    }
    let counted = limits.connections != 0 || limits.connection_rate != 0 || limits.request_rate != 0;
    let key = SourceKey::of(source, limits);
    if counted {
        guard
            .sources
            .connect(key, limits, now_ms)
            .map_err(|exceeded| guard.count(exceeded.into()))?;
    }
    Ok(Admitted {
        guard: Arc::clone(guard),
        key,
        counted,
    })
}

/// A served connection (or UDP session), counted against its source until
/// dropped.
#[derive(Debug)]
pub struct Admitted {
    guard: Arc<ListenerGuard>,
    key: SourceKey,
    counted: bool,
}

impl Admitted {
    /// One HTTP request on this connection: `Err` with the seconds to
    /// wait (for `Retry-After`) when its source is over its request rate.
    pub fn request(&self, limits: &ClientLimits, now_ms: u64) -> Result<(), u64> {
        match self.guard.sources.request(self.key, limits, now_ms) {
            Ok(()) => Ok(()),
            Err(exceeded) => {
                self.guard.count(exceeded.into());
                let retry_in_ms = match exceeded {
                    Exceeded::RequestRate { retry_in_ms } => retry_in_ms,
                    _ => 1000,
                };
                Err(retry_in_ms.div_ceil(1000).max(1))
            }
        }
    }

    /// Counts a refusal the HTTP server made on this connection.
    pub fn count(&self, reason: Refusal) {
        self.guard.count(reason);
    }

    /// The listener's guard, where its refusals are counted.
    pub fn listener(&self) -> &Arc<ListenerGuard> {
        &self.guard
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.counted {
            self.guard.sources.disconnect(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlb_config::{AclAction, AclRule};

    #[test]
    fn refusals_are_counted_by_reason_and_a_close_frees_the_place() {
        let guard = Arc::new(ListenerGuard::default());
        let acl = AclTable::build(&[AclRule {
            network: "198.18.9.0/24".parse().unwrap(),
            action: AclAction::Deny,
        }]);
        let limits = ClientLimits {
            connections: 1,
            ..ClientLimits::default()
        };
        let source: IpAddr = "198.18.0.1".parse().unwrap();
        assert_eq!(
            admit(&guard, &acl, &limits, "198.18.9.9".parse().unwrap(), 1).unwrap_err(),
            Refusal::Acl
        );
        let first = admit(&guard, &acl, &limits, source, 1).unwrap();
        assert_eq!(
            admit(&guard, &acl, &limits, source, 1).unwrap_err(),
            Refusal::Connections
        );
        drop(first);
        let again = admit(&guard, &acl, &limits, source, 2).unwrap();
        let strict = ClientLimits {
            request_rate: 1,
            request_burst: 1,
            ..limits
        };
        // The bucket was filled at the default burst when the source was new.
        while again.request(&strict, 2).is_ok() {}
        assert_eq!(again.request(&strict, 2), Err(1));
        assert_eq!(guard.refused(Refusal::Acl), 1);
        assert_eq!(guard.refused(Refusal::Connections), 1);
        assert!(guard.refused(Refusal::RequestRate) >= 1);
    }
}
