//! Failpoints: bugs planted on purpose, so that the jepsen harness can show
//! it catches them (`raftlb-jepsen prove`). This module owns them: their
//! names, the `RAFTLB_FAILPOINTS` variable that switches them on at start,
//! and the one that needs more than a line at its site.
//!
//! They exist only in a binary built with the cargo feature `failpoints`
//! (`cargo build -p raftlb-node --features failpoints`); without it, as in
//! every release and normal build, none of their code is compiled, and
//! [`init`] only warns that the variable is set and ignored. It does not
//! refuse to start: such a binary cannot act on the variable, so a stray
//! one (say, left in a unit file) must not take a balancer down; the
//! harness, for its part, checks each node's log for the warning below
//! before it trusts a run with failpoints.
//!
//! `RAFTLB_FAILPOINTS=vip-skip-lease-wait,admin-ack-before-commit`:
//!
//! - `vip-skip-lease-wait`: a successor no longer waits out the VIP holder's
//!   lease. A new leader claims the VIP as soon as it is elected; that is
//!   safe only because the holder's lease (one election timeout, kernel
//!   fence included) runs out before the followers' vote lease (two
//!   election timeouts) lets anyone be elected. With this failpoint the
//!   holder leases itself [`STRETCHED_LEASE`] election timeouts instead
//!   and keeps the lease through failed confirmation rounds (until it
//!   runs out or the node sees it is no longer leader), so a frozen or
//!   cut-off holder's kernel still answers ARP for the VIP when its
//!   successor claims it.
//! - `admin-ack-before-commit`: a leader answers an admin write as applied
//!   as soon as it has handed it to openraft, with the outcome of applying
//!   it to its own last applied state, before any quorum has it
//!   ([`ack_before_commit`]). A leader cut off from the others acknowledges
//!   writes that are never committed.

/// The variable listing the failpoints to switch on, comma-separated.
pub const ENV: &str = "RAFTLB_FAILPOINTS";

#[cfg(any(feature = "failpoints", test))]
pub use planted::*;

/// Reads [`ENV`] once at start. With the feature: switches the listed
/// failpoints on, logging a warning that names them, and refuses an
/// unknown name. Without it: warns that the variable is ignored.
pub fn init() -> Result<(), String> {
    let Ok(list) = std::env::var(ENV) else {
        return Ok(());
    };
    #[cfg(feature = "failpoints")]
    {
        let points = planted::parse(&list)?;
        planted::switch_on(&points);
        if !points.is_empty() {
            let names: Vec<&str> = points.iter().map(|p| p.name()).collect();
            tracing::warn!(
                failpoints = %names.join(","),
                "FAILPOINTS ACTIVE: this node runs with bugs planted on purpose; never use it for real traffic"
            );
        }
        Ok(())
    }
    #[cfg(not(feature = "failpoints"))]
    {
        tracing::warn!(
            "{ENV}={list:?} is set, but this raftlb was built without the `failpoints` feature: ignored"
        );
        Ok(())
    }
}

#[cfg(any(feature = "failpoints", test))]
mod planted {
    /// How many election timeouts `vip-skip-lease-wait` leases the VIP for
    /// (a successor can claim after about three or four).
    pub const STRETCHED_LEASE: u32 = 10;

    /// One planted bug.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Failpoint {
        VipSkipLeaseWait,
        AdminAckBeforeCommit,
    }

    impl Failpoint {
        pub const ALL: [Failpoint; 2] = [Failpoint::VipSkipLeaseWait, Failpoint::AdminAckBeforeCommit];

        pub fn name(self) -> &'static str {
            match self {
                Failpoint::VipSkipLeaseWait => "vip-skip-lease-wait",
                Failpoint::AdminAckBeforeCommit => "admin-ack-before-commit",
            }
        }

        fn bit(self) -> u8 {
            1 << (self as u8)
        }
    }

    /// The failpoints named in `list` (comma-separated, blanks around names
    /// and empty entries ignored, each once); an unknown name is an error.
    pub fn parse(list: &str) -> Result<Vec<Failpoint>, String> {
        let mut points = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some(point) = Failpoint::ALL.into_iter().find(|p| p.name() == name) else {
                let known: Vec<&str> = Failpoint::ALL.iter().map(|p| p.name()).collect();
                return Err(format!(
                    "{}: unknown failpoint {name:?} (known: {})",
                    super::ENV,
                    known.join(", ")
                ));
            };
            if !points.contains(&point) {
                points.push(point);
            }
        }
        Ok(points)
    }

    /// The switches of `points`, one bit each.
    pub(super) fn bits(points: &[Failpoint]) -> u8 {
        points.iter().fold(0, |bits, p| bits | p.bit())
    }

    #[cfg(feature = "failpoints")]
    static ACTIVE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

    #[cfg(feature = "failpoints")]
    pub(super) fn switch_on(points: &[Failpoint]) {
        ACTIVE.fetch_or(bits(points), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `point` was switched on at start.
    #[cfg(feature = "failpoints")]
    pub fn active(point: Failpoint) -> bool {
        ACTIVE.load(std::sync::atomic::Ordering::Relaxed) & point.bit() != 0
    }
}

#[cfg(feature = "failpoints")]
pub use admin::ack_before_commit;

#[cfg(feature = "failpoints")]
mod admin {
    use super::{Failpoint, active};
    use crate::control::state_machine::Applied;
    use crate::control::types::Raft;
    use openraft::ServerState;
    use raftlb_config::Command;
    use raftlb_proto::admin::WriteReply;
    use std::sync::Arc;
    use tokio::sync::watch;

    /// `admin-ack-before-commit`: on the leader, hands `command` to openraft
    /// without waiting for it to commit and returns a reply as if it had
    /// been applied (the outcome of applying it to a copy of the last
    /// applied state; the log index it would probably get). `None` when
    /// the failpoint is off or this node does not lead: the write then
    /// goes the usual way.
    pub async fn ack_before_commit(
        raft: &Raft,
        applied: &watch::Receiver<Arc<Applied>>,
        command: &Command,
    ) -> Option<WriteReply> {
        if !active(Failpoint::AdminAckBeforeCommit) {
            return None;
        }
        let (state, last_log) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            (m.state, m.last_log_index)
        };
        if state != ServerState::Leader {
            return None;
        }
        let mut predicted = applied.borrow().state.clone();
        let outcome = predicted.apply(command.clone());
        // Handed over, not awaited: the responder is dropped.
        let format = applied.borrow().state.cluster_version();
        raft.client_write_ff(raftlb_config::Proposal::new(format, command.clone()))
            .await
            .ok()?;
        Some(WriteReply {
            log_index: last_log.unwrap_or(0) + 1,
            applied: outcome.is_applied(),
            rejected: outcome.rejection(),
            outcome: postcard::to_allocvec(&outcome).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_each_failpoint_once_whatever_the_blanks() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse(" , ,"), Ok(vec![]));
        assert_eq!(
            parse("vip-skip-lease-wait"),
            Ok(vec![Failpoint::VipSkipLeaseWait])
        );
        assert_eq!(
            parse(" admin-ack-before-commit , vip-skip-lease-wait,admin-ack-before-commit,"),
            Ok(vec![Failpoint::AdminAckBeforeCommit, Failpoint::VipSkipLeaseWait])
        );
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let error = parse("vip-skip-lease-wait,ack-early").unwrap_err();
        assert!(error.contains("RAFTLB_FAILPOINTS"), "{error}");
        assert!(error.contains("\"ack-early\""), "{error}");
        assert!(
            error.contains("vip-skip-lease-wait, admin-ack-before-commit"),
            "{error}"
        );
        assert!(parse("VIP-SKIP-LEASE-WAIT").is_err(), "names are exact");
    }

    #[test]
    fn every_failpoint_has_its_own_switch() {
        assert_eq!(planted::bits(&[]), 0);
        for (i, a) in Failpoint::ALL.iter().enumerate() {
            assert_eq!(parse(a.name()), Ok(vec![*a]));
            for b in &Failpoint::ALL[i + 1..] {
                assert_eq!(planted::bits(&[*a, *b]).count_ones(), 2, "{a:?} and {b:?}");
            }
        }
        assert_eq!(planted::bits(&Failpoint::ALL), 0b11);
    }
}
