//! What `/metrics` reads of the control plane beyond openraft's own
//! metrics: the commit index (openraft 0.9 reports only the applied one),
//! how many proposals wait or are in flight, the snapshot's size, how
//! often this node saw the leader change, and how the VIP leases fared.

use super::proposer::Proposer;
use super::state_machine::StateMachine;
use super::types::{Metrics, NodeId};
use super::writer::Writer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The control plane's gauges and counters, cheap to clone.
#[derive(Clone, Debug)]
pub struct Gauges {
    /// The last index the log store was told is committed.
    committed: Arc<AtomicU64>,
    proposer: Proposer,
    writer: Writer,
    machine: StateMachine,
    leader_changes: Arc<AtomicU64>,
    /// Shared with the VIP manager.
    pub vip: Arc<VipCounts>,
    /// Shared with the leader's discovery tasks.
    pub discovery: Arc<super::discovery::DiscoveryCounts>,
}

/// How this node's VIP leases fared, counted by the VIP manager.
#[derive(Debug, Default)]
pub struct VipCounts {
    /// Every VIP configured on this node (`address/prefix`), held or not.
    configured: Mutex<Vec<String>>,
    /// Fence renewals that went through in time, one per VIP.
    pub renewals: AtomicU64,
    /// Leases that ended unrenewed, one per VIP: a quorum round failed,
    /// the lease ran out, or a fence renewal failed or stalled.
    pub misses: AtomicU64,
}

impl VipCounts {
    /// Adds `labels` to the VIPs configured here.
    pub fn configure(&self, labels: impl IntoIterator<Item = String>) {
        self.configured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(labels);
    }

    /// Every VIP configured on this node, held or not.
    pub fn configured(&self) -> Vec<String> {
        self.configured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Gauges {
    pub(super) fn new(
        committed: Arc<AtomicU64>,
        proposer: Proposer,
        writer: Writer,
        machine: StateMachine,
    ) -> Gauges {
        Gauges {
            committed,
            proposer,
            writer,
            machine,
            leader_changes: Arc::default(),
            vip: Arc::default(),
            discovery: Arc::default(),
        }
    }

    /// The last log index this node knows committed.
    pub fn commit_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Proposals queued in the proposer plus writes (a batch counts once)
    /// on their way through the leader.
    pub fn proposal_queue_depth(&self) -> usize {
        self.proposer.waiting() + self.writer.in_flight()
    }

    /// The size of the last snapshot built or installed here (its file).
    pub fn snapshot_bytes(&self) -> u64 {
        self.machine.snapshot_bytes()
    }

    /// Times this node saw the leader change, to none included.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// Counts leader changes as `metrics` reports them, until Raft stops.
    /// A process starts knowing no leader, so the first it learns of
    /// counts (even one elected before this task started).
    pub(super) fn count_leader_changes(&self, metrics: watch::Receiver<Metrics>) -> JoinHandle<()> {
        tokio::spawn(count_leader_changes(
            metrics,
            None,
            Arc::clone(&self.leader_changes),
        ))
    }
}

/// Adds one to `changes` each time `metrics` names another leader (or
/// none) than the last, starting from `leader`.
async fn count_leader_changes(
    mut metrics: watch::Receiver<Metrics>,
    mut leader: Option<NodeId>,
    changes: Arc<AtomicU64>,
) {
    loop {
        let now = metrics.borrow_and_update().current_leader;
        if now != leader {
            changes.fetch_add(1, Ordering::Relaxed);
            leader = now;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_change_of_leader_counts_and_nothing_else_does() {
        let (raft, metrics) = watch::channel(Metrics::new_initial(1));
        let changes = Arc::new(AtomicU64::new(0));
        let counting = tokio::spawn(count_leader_changes(metrics, None, Arc::clone(&changes)));
        let counted = |n: u64| {
            let changes = Arc::clone(&changes);
            async move {
                let seen = tokio::time::timeout(Duration::from_secs(5), async {
                    while changes.load(Ordering::Relaxed) != n {
                        tokio::task::yield_now().await;
                    }
                });
                assert!(
                    seen.await.is_ok(),
                    "expected {n} changes, counted {}",
                    changes.load(Ordering::Relaxed)
                );
            }
        };
        for (leader, term, total) in [(Some(1), 1, 1), (Some(1), 2, 1), (None, 3, 2), (Some(2), 3, 3)] {
            raft.send_modify(|m| {
                m.current_leader = leader;
                m.current_term = term;
            });
            counted(total).await;
        }
        drop(raft);
        assert!(counting.await.is_ok(), "the count ends with Raft");
        assert_eq!(changes.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_leader_elected_before_counting_starts_counts() {
        let mut elected = Metrics::new_initial(1);
        elected.current_leader = Some(1);
        let (raft, metrics) = watch::channel(elected);
        let changes = Arc::new(AtomicU64::new(0));
        let counting = tokio::spawn(count_leader_changes(metrics, None, Arc::clone(&changes)));
        drop(raft);
        assert!(counting.await.is_ok());
        assert_eq!(changes.load(Ordering::Relaxed), 1);
    }
}
