//! Active health checks. Every balancer node probes every backend of every
//! pool with a `[pool.health_check]` for itself (it routes by what it can
//! reach), one task per backend on the control plane's runtime, with
//! jitter so probes neither align across backends nor across nodes. After
//! `fall` failures in a row an up backend goes down; after `rise` successes
//! a down one comes up (ramping by slow start).
//!
//! Each node's verdicts are committed through Raft ([`Command::ReportHealth`])
//! when they differ from what the cluster holds, coalesced and at most
//! [`REPORTS_EVERY`]: transitions, not probes, reach the log, so `ctl
//! backend list` shows every node's view and a restarted node starts from
//! its own last verdict instead of sending traffic to a known-dead backend.

use super::probe::probe;
use crate::backend::Backend;
use crate::control::ControlPlane;
use crate::control::proposer::Proposer;
use crate::control::state_machine::Applied;
use crate::events::{Events, Kind};
use crate::view::{ClusterView, PoolView};
use raftlb_config::{Command, HealthCheck};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Verdicts are proposed at most this often (each time all that changed).
pub const REPORTS_EVERY: Duration = Duration::from_millis(250);

/// A verdict to commit: `address` in `pool` is up (true) or down.
type Verdict = ((String, SocketAddr), bool);

/// The running checks of this node.
#[derive(Debug)]
pub struct Checkers {
    running: Mutex<HashMap<(String, SocketAddr), Running>>,
    verdicts: mpsc::UnboundedSender<Verdict>,
    reporter: JoinHandle<()>,
    /// Where ups and downs are noted for the status page.
    events: Arc<Events>,
}

#[derive(Debug)]
struct Running {
    check: HealthCheck,
    backend: Arc<Backend>,
    pool: Arc<PoolView>,
    task: JoinHandle<()>,
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.reporter.abort();
        let running = self.running.get_mut().unwrap_or_else(PoisonError::into_inner);
        for (_, check) in running.drain() {
            check.task.abort();
        }
    }
}

impl Checkers {
    /// Starts the reporter of node `node`; checks start with [`Checkers::follow`].
    pub fn start(control: &ControlPlane, node: u64) -> Checkers {
        let (verdicts, inbox) = mpsc::unbounded_channel();
        Checkers {
            running: Mutex::new(HashMap::new()),
            verdicts,
            reporter: tokio::spawn(report(control.applied(), control.proposer(), node, inbox)),
            events: control.events(),
        }
    }

    /// Runs one check per backend (whatever its admin state: a drained
    /// backend's health still matters to its sticky sessions) of every pool
    /// of `view` that has checks, and no other. A check whose settings,
    /// backend or pool TLS changed is restarted. Backends of pools without
    /// checks are never down.
    pub fn follow(&self, view: &ClusterView) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wanted = HashMap::new();
        for pool in view.pools() {
            let Some(check) = &pool.spec.health.check else {
                for backend in pool.members() {
                    backend.health().set_down(false);
                }
                continue;
            };
            for backend in pool.members() {
                wanted.insert(
                    (pool.spec.name.clone(), backend.address()),
                    (pool, backend, check),
                );
            }
        }
        running.retain(|key, run| {
            let keep = wanted.get(key).is_some_and(|(pool, backend, check)| {
                run.check == **check
                    && Arc::ptr_eq(&run.backend, backend)
                    && run.pool.spec.tls == pool.spec.tls
                    && run.pool.spec.connect_timeout == pool.spec.connect_timeout
            });
            if !keep {
                run.task.abort();
            }
            keep
        });
        for (key, (pool, backend, check)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(run(
                Arc::clone(pool),
                Arc::clone(backend),
                check.clone(),
                self.verdicts.clone(),
                Arc::clone(&self.events),
            ));
            let run = Running {
                check: check.clone(),
                backend: Arc::clone(backend),
                pool: Arc::clone(pool),
                task,
            };
            running.insert(key, run);
        }
    }
}

/// Probes one backend forever.
async fn run(
    pool: Arc<PoolView>,
    backend: Arc<Backend>,
    check: HealthCheck,
    verdicts: mpsc::UnboundedSender<Verdict>,
    events: Arc<Events>,
) {
    let name = pool.spec.name.clone();
    let address = backend.address();
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut reported: Option<bool> = None;
    // A random start spreads the probes of many backends over the interval.
    tokio::time::sleep(check.interval.mul_f64(random_fraction())).await;
    loop {
        match probe(&pool, address, &check).await {
            Ok(()) => {
                successes = successes.saturating_add(1);
                failures = 0;
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                successes = 0;
                tracing::debug!(pool = %name, backend = %address, %reason, failures, "health probe failed");
                if failures == check.fall && backend.health().set_down(true) {
                    tracing::warn!(pool = %name, backend = %address, %reason, fall = check.fall, "backend down");
                    events.record(Kind::Backend, format!("{address} in pool {name} down: {reason}"));
                }
            }
        }
        if successes == check.rise && backend.health().set_down(false) {
            tracing::info!(pool = %name, backend = %address, rise = check.rise, "backend up");
            events.record(Kind::Backend, format!("{address} in pool {name} up"));
        }
        // A verdict is settled once a threshold is reached; report it if new.
        if successes >= check.rise || failures >= check.fall {
            let up = !backend.health().is_down();
            if reported != Some(up) {
                reported = Some(up);
                let _ = verdicts.send(((name.clone(), address), up));
            }
        }
        // ±10 % jitter keeps nodes and backends from probing in step.
        let jitter = 0.9 + 0.2 * random_fraction();
        tokio::time::sleep(check.interval.mul_f64(jitter)).await;
    }
}

/// Commits verdicts that differ from this node's committed ones, coalesced
/// (the latest verdict per backend wins) and at most every [`REPORTS_EVERY`].
/// One that could not be committed (no quorum) is tried again.
async fn report(
    applied: watch::Receiver<Arc<Applied>>,
    proposer: Proposer,
    node: u64,
    mut inbox: mpsc::UnboundedReceiver<Verdict>,
) {
    let mut pending: HashMap<(String, SocketAddr), bool> = HashMap::new();
    let mut tick = tokio::time::interval(REPORTS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            verdict = inbox.recv() => match verdict {
                Some((key, up)) => { pending.insert(key, up); }
                None => return,
            },
            _ = tick.tick() => {
                if pending.is_empty() {
                    continue;
                }
                let state = Arc::clone(&applied.borrow());
                let health = state.state.health();
                pending.retain(|(pool, address), up| health.verdict(pool, *address, node) != Some(*up));
                // Spawned together, so the proposer commits them as one entry.
                let proposals: Vec<_> = pending
                    .iter()
                    .map(|((pool, address), up)| {
                        let command = Command::ReportHealth { node, pool: pool.clone(), address: *address, up: *up };
                        let proposer = proposer.clone();
                        let key = (pool.clone(), *address);
                        tokio::spawn(async move { (key, proposer.propose(command).await) })
                    })
                    .collect();
                for proposal in proposals {
                    let Ok((key, outcome)) = proposal.await else { continue };
                    match outcome {
                        // Applied, or refused because the backend is gone: done.
                        Ok(_) => { pending.remove(&key); }
                        Err(e) => tracing::debug!(pool = %key.0, backend = %key.1, error = %e, "health verdict not committed yet"),
                    }
                }
            }
        }
    }
}

/// A number in [0, 1) from the operating system (probes are rare).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}
