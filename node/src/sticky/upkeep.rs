//! What the tables need besides traffic. On the leader: the cluster's
//! cookie secret, if seeding did not set it; and expiry, proposed as
//! `Expire { now_ms }` with the leader's clock, so every node forgets the
//! same sessions at the same log position. On every node: the proposal-rate
//! sample `ctl sticky stats` shows.

use super::metrics::now_ms;
use crate::control::ControlPlane;
use openraft::ServerState;
use raftlb_config::{Command, StickyChange, StickySecret};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the leader expires sessions (ttls are at least a second).
const EXPIRY_EVERY: Duration = Duration::from_secs(1);

/// 32 random bytes from the operating system, for the cookie secret.
pub fn draw_secret() -> Option<StickySecret> {
    let mut secret = [0u8; 32];
    match getrandom::fill(&mut secret) {
        Ok(()) => Some(StickySecret(secret)),
        Err(e) => {
            tracing::error!(error = %e, "cannot draw a sticky-cookie secret");
            None
        }
    }
}

/// Runs the upkeep until the returned task is aborted.
pub fn start(control: &ControlPlane) -> JoinHandle<()> {
    let raft = control.raft_metrics();
    let applied = control.applied();
    let proposer = control.proposer();
    let tables = control.sticky_tables();
    let metrics = control.sticky_metrics();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            metrics.sample_rate();
            if raft.borrow().state != ServerState::Leader {
                continue;
            }
            let state = Arc::clone(&applied.borrow());
            if !state.state.is_bootstrapped() {
                continue;
            }
            // Seeding sets it; a cluster seeded by an older version has none.
            if state.state.sticky_secret().is_none()
                && let Some(secret) = draw_secret()
            {
                let outcome = proposer.propose(Command::SetStickySecret(secret)).await;
                tracing::info!(?outcome, "drew the cluster's sticky-cookie secret");
            }
            if tables.stats().iter().any(|t| t.entries > 0) {
                let expire = Command::Sticky(StickyChange::Expire { now_ms: now_ms() });
                if let Err(e) = proposer.propose(expire).await {
                    tracing::debug!(error = %e, "sticky expiry not proposed");
                }
            }
        }
    })
}
