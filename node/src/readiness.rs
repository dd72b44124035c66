//! Whether this node is ready for traffic: what `/readyz`, Kubernetes'
//! readiness probe, the container's `HEALTHCHECK` and systemd's `READY=1`
//! go by. A node is ready once it serves every listener of the state it
//! knew committed at start **and** has joined its cluster (applied what
//! the leader had committed when it asked); it stops being ready when it
//! starts to drain. One watch channel, set by [`crate::node::run`].

use tokio::sync::watch;

/// Where a node is in its life, as a readiness probe sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Replaying its log; its listeners are not all bound yet.
    Starting,
    /// Serving its listeners, catching up with the cluster: `target` is the
    /// leader's commit index once a leader told it.
    Joining {
        target: Option<u64>,
    },
    Ready,
    /// Stopping or handing over: no new work should come here.
    Draining,
}

impl Readiness {
    pub fn is_ready(self) -> bool {
        self == Readiness::Ready
    }

    /// One line for `/readyz` and systemd's `STATUS=`.
    pub fn describe(self) -> String {
        match self {
            Readiness::Starting => "starting: replaying the log and binding listeners".to_string(),
            Readiness::Joining { target: None } => {
                "joining: listeners bound, waiting for a leader to say what is committed".to_string()
            }
            Readiness::Joining { target: Some(index) } => {
                format!("joining: listeners bound, applying up to the leader's commit index {index}")
            }
            Readiness::Ready => "ready".to_string(),
            Readiness::Draining => "draining: no new connections".to_string(),
        }
    }
}

/// The channel `run` sets and probes read.
pub fn channel() -> (watch::Sender<Readiness>, watch::Receiver<Readiness>) {
    watch::channel(Readiness::Starting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_is_ready_and_each_stage_says_why() {
        let stages = [
            Readiness::Starting,
            Readiness::Joining { target: None },
            Readiness::Joining { target: Some(42) },
            Readiness::Ready,
            Readiness::Draining,
        ];
        let ready: Vec<bool> = stages.iter().map(|s| s.is_ready()).collect();
        assert_eq!(ready, [false, false, false, true, false]);
        assert!(stages[2].describe().contains("42"));
        assert!(stages[4].describe().starts_with("draining"));
    }
}
