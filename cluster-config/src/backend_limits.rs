//! How much work a pool's backends take at once, and what waits when they
//! are full: HAProxy's `maxconn` (per server), `maxqueue` and `timeout
//! queue`. Counted by each node for itself: with traffic spread over N
//! nodes a backend may have up to N × `max_connections` in hand.

use crate::limits::{MAX_BACKEND_CONNECTIONS, MAX_QUEUE};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A pool's `max_connections`, `max_queue` and `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionLimits {
    /// Open L4 connections plus in-flight HTTP requests one backend takes
    /// from this node, unless the backend sets its own; 0: no limit.
    pub max_connections: u32,
    /// Connections and requests that may wait on this node for a backend
    /// with room; past it they are refused (HTTP: `503`; TCP: closed).
    pub max_queue: u32,
    /// The longest one waits before it is refused the same way.
    pub queue_timeout: Duration,
}

impl ConnectionLimits {
    pub const MAX_CONNECTIONS: u32 = MAX_BACKEND_CONNECTIONS;
    pub const MAX_QUEUE: u32 = MAX_QUEUE;
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 0,
            max_queue: 1024,
            queue_timeout: Duration::from_secs(5),
        }
    }
}
