//! File descriptors: the process's limit is raised to its hard limit at
//! start (the soft default, often 1024, would cap a balancer at a few
//! hundred clients), and the data plane is given a share of it, so that
//! clients holding connections can never leave the control plane (Raft,
//! the admin API, `/metrics`, the data dir) without descriptors.
//!
//! The share is counted in served connections and UDP sessions: each holds
//! up to two descriptors (the client's and its backend's), as HAProxy
//! derives its global `maxconn` from the limit. What is over the share
//! waits in the kernel's backlog, like a listener's `max_connections`.

/// Descriptors kept for the control plane and everything that is not a
/// served connection: Raft and admin links, the log store, `/metrics`,
/// health checks, idle backend connections.
pub const RESERVED: u64 = 256;

/// Raises the soft limit on open files to the hard limit and returns the
/// limit now in force (logged, with the data plane's share).
pub fn raise_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is "unlimited"; no descriptor table is that large.
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let before = limit.current.unwrap_or(hard);
    let mut now = before;
    if before < hard {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => now = hard,
            Err(error) => tracing::warn!(%error, soft = before, hard, "cannot raise the open-file limit"),
        }
    }
    tracing::info!(
        open_files = now,
        was = before,
        data_plane_connections = data_plane_share(now),
        "open-file limit"
    );
    now
}

/// Connections and UDP sessions the data plane may hold at once under a
/// limit of `open_files` descriptors (at least 16, however low the limit).
pub fn data_plane_share(open_files: u64) -> usize {
    let share = open_files.saturating_sub(RESERVED) / 2;
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(16, tokio::sync::Semaphore::MAX_PERMITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_leaves_the_reserve_and_two_descriptors_a_connection() {
        assert_eq!(data_plane_share(1024), 384);
        assert_eq!(data_plane_share(1_048_576), 524_160);
        assert_eq!(data_plane_share(100), 16);
        assert_eq!(data_plane_share(u64::MAX), tokio::sync::Semaphore::MAX_PERMITS);
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        use rustix::process::{Resource, getrlimit};
        let raised = raise_limit();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current, limit.maximum);
        assert_eq!(raised, limit.current.unwrap_or(u64::MAX));
    }
}
