//! `[node] access_log`: where and how a node writes one line per request
//! and L4 connection. Node-local, never replicated.

use serde::{Deserialize, Serialize};

/// `[node] access_log = { format, path }` (node-local, not replicated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogSpec {
    pub format: AccessLogFormat,
    /// The file lines are appended to; `None` (`"-"` or no `path`): stderr.
    pub path: Option<String>,
}

/// How an access log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessLogFormat {
    /// Apache/nginx `combined`, extra fields appended as `key=value`.
    Combined,
    /// One JSON object per line.
    Json,
}
