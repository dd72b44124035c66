//! Notices when the control runtime was blocked: one thread runs Raft, the
//! VIP leases and the admin services, so a blocking call on it (a system
//! call waiting for an RCU grace period, a slow disk) delays heartbeats and
//! lease renewals for everyone. A timer that should fire every
//! [`EVERY`] and fires late by more than [`LATE`] says so in the log.

use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the watch looks.
const EVERY: Duration = Duration::from_millis(100);
/// Lateness worth a warning: a sizeable share of the default heartbeat.
const LATE: Duration = Duration::from_millis(40);

/// Starts watching; the task ends with the runtime.
pub fn spawn() -> JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = tick.tick().await;
            let late = due.elapsed();
            if late > LATE {
                tracing::warn!(
                    late = ?late,
                    "the control runtime was blocked: Raft heartbeats and VIP lease renewals waited"
                );
            }
        }
    })
}
