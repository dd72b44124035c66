//! The leader's side of DNS discovery: while this node leads, one task per
//! pool with `discovery` asks its name ([`dns`](super::dns)), decides with
//! [`raftlb_config::discovery::decide`] and commits the verdict as one
//! `SetDiscovered`, so every node switches to the same set at the same log
//! index. Followers never resolve. Failures keep the committed set; each is
//! counted here and logged once when it starts.

use super::dns;
use super::state_machine::Applied;
use super::types::Raft;
use super::writer::Writer;
use raftlb_config::Command;
use raftlb_config::discovery::{self, Answer, DiscoveryFailure, DiscoverySpec};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the leader looks for pools whose discovery starts or stops.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Lookups and failures of the discovery this node ran as leader, per pool.
#[derive(Debug, Default)]
pub struct DiscoveryCounts {
    lookups: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl DiscoveryCounts {
    fn count(&self, pool: &str, failure: Option<DiscoveryFailure>) {
        let mut lookups = self.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        *lookups.entry(pool.to_string()).or_default() += 1;
        if let Some(failure) = failure {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            *failures.entry((pool.to_string(), failure.name())).or_default() += 1;
        }
    }

    /// Rounds of queries per pool.
    pub fn lookups(&self) -> Vec<(String, u64)> {
        let lookups = self.lookups.lock().unwrap_or_else(PoisonError::into_inner);
        lookups.iter().map(|(p, n)| (p.clone(), *n)).collect()
    }

    /// Failed rounds per pool and reason.
    pub fn failures(&self) -> Vec<(String, &'static str, u64)> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.iter().map(|((p, r), n)| (p.clone(), *r, *n)).collect()
    }
}

/// While this node leads, keeps one resolving task per discovery pool
/// (restarted when its `discovery` changes); none while it follows.
pub async fn keep_resolved(
    raft: Raft,
    writer: Writer,
    applied: watch::Receiver<Arc<Applied>>,
    counts: Arc<DiscoveryCounts>,
) {
    let mut running: HashMap<String, (DiscoverySpec, JoinHandle<()>)> = HashMap::new();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let metrics = raft.metrics().borrow().clone();
        let leading = metrics.current_leader == Some(metrics.id);
        let wanted: HashMap<String, DiscoverySpec> = match leading {
            true => applied
                .borrow()
                .state
                .spec()
                .pools
                .iter()
                .filter_map(|p| p.discovery.clone().map(|d| (p.name.clone(), d)))
                .collect(),
            false => HashMap::new(),
        };
        running.retain(|pool, (spec, task)| {
            let keep = wanted.get(pool) == Some(spec) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (pool, spec) in wanted {
            if running.contains_key(&pool) {
                continue;
            }
            let task = tokio::spawn(resolve_pool(
                pool.clone(),
                spec.clone(),
                raft.clone(),
                writer.clone(),
                applied.clone(),
                Arc::clone(&counts),
            ));
            running.insert(pool, (spec, task));
        }
    }
}

/// Asks `pool`'s name again and again, committing what changes.
async fn resolve_pool(
    pool: String,
    spec: DiscoverySpec,
    raft: Raft,
    writer: Writer,
    applied: watch::Receiver<Arc<Applied>>,
    counts: Arc<DiscoveryCounts>,
) {
    tracing::info!(
        pool,
        name = spec.name,
        record = spec.record.name(),
        "resolving as leader"
    );
    loop {
        let servers = dns::resolvers(&spec);
        let (answer, ttl) = dns::resolve(&spec, &servers).await;
        let failure = match &answer {
            Answer::Failed(kind) => Some(*kind),
            Answer::Records(_) => None,
        };
        counts.count(&pool, failure);
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            return;
        }
        let update = {
            let applied = applied.borrow();
            let Some(current) = applied.state.spec().pool(&pool) else {
                return;
            };
            discovery::decide(current, &answer, now_ms())
        };
        if let Some(update) = update {
            log(&pool, &spec, &update, servers.is_empty());
            // Committed here or nowhere: a deposed leader's answer is not
            // passed on to the next one.
            match writer.submit(Command::SetDiscovered(update), true).await {
                Ok((_, outcome)) if outcome.is_applied() => {}
                Ok((_, outcome)) => {
                    tracing::warn!(pool, reason = outcome.rejection(), "discovery update refused")
                }
                Err(status) => {
                    tracing::debug!(pool, reason = status.message(), "discovery update not committed")
                }
            }
        }
        let wait = match failure {
            None => spec.next_after(ttl),
            Some(_) => spec.interval.max(spec.min_ttl),
        };
        tokio::time::sleep(wait).await;
    }
}

/// One line per change of set or of failure (decide proposes only those,
/// and a refresh of the last good time, which is not logged).
fn log(pool: &str, spec: &DiscoverySpec, update: &discovery::DiscoveryUpdate, no_servers: bool) {
    match (&update.backends, update.failure) {
        (Some(set), None) => tracing::info!(
            pool,
            name = spec.name,
            backends = set.len(),
            "discovered a new backend set"
        ),
        (Some(_), Some(_)) => tracing::warn!(
            pool,
            name = spec.name,
            hold = ?spec.nxdomain_hold,
            "NXDOMAIN held past nxdomain_hold: the discovered set is emptied"
        ),
        (None, Some((failure, _))) => tracing::warn!(
            pool,
            name = spec.name,
            failure = failure.name(),
            no_servers,
            "discovery failed: the last committed backend set is kept"
        ),
        (None, None) if update.last_good_ms == 0 => {}
        (None, None) => tracing::debug!(pool, "discovery answered (status refreshed)"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
