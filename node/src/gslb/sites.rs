//! The leader's GSLB site checks. Only the leader probes (with the pool
//! checks' probes, `health::probe`), and it commits each verdict
//! transition (`rise` successes bring a site up, `fall` failures take it
//! down) as one `SetSiteHealth`, so every node answers from the same
//! verdicts (and the first verdict on a site, which counts as up until
//! then). A new leader starts from the committed ones. A site's load
//! (its `/readyz`'s `X-Raftlb-Load`) is committed when it moves by a
//! [`load_moved`] step, at most once every [`LOAD_EVERY`] per site.

use crate::control::state_machine::Applied;
use crate::control::types::Metrics;
use crate::control::writer::Writer;
use crate::health::probe;
use raftlb_config::Command;
use raftlb_config::gslb::SiteCheck;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Least time between two load commits of one site.
pub const LOAD_EVERY: Duration = Duration::from_secs(2);
/// Smallest load change worth a commit.
pub const LOAD_STEP: u32 = 10;

/// Whether a site's load moved enough from the committed figure to be
/// committed: by [`LOAD_STEP`] and by a quarter of the committed figure.
pub fn load_moved(committed: u32, seen: u32) -> bool {
    committed.abs_diff(seen) >= LOAD_STEP.max(committed / 4)
}

/// What one check task is started with; a change restarts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    site: String,
    address: SocketAddr,
    check: SiteCheckKey,
}

/// The check's settings in a hashable form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SiteCheckKey(String);

/// Runs the checks while this node leads; stops them when it does not.
pub fn start(
    mut metrics: watch::Receiver<Metrics>,
    me: u64,
    mut applied: watch::Receiver<Arc<Applied>>,
    writer: Writer,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<Key, JoinHandle<()>> = HashMap::new();
        loop {
            let leading = metrics.borrow_and_update().current_leader == Some(me);
            // Marked seen whether or not this node leads, so that the wait
            // below sleeps until the next change.
            let current = Arc::clone(&applied.borrow_and_update());
            let mut wanted: HashMap<Key, SiteCheck> = HashMap::new();
            if leading {
                for name in current.state.spec().gslb.iter().flat_map(|g| &g.names) {
                    for site in &name.sites {
                        let (Some(check), Some(ip)) = (&site.check, site.addresses.first()) else {
                            continue;
                        };
                        let key = Key {
                            name: name.name.clone(),
                            site: site.name.clone(),
                            address: SocketAddr::new(*ip, check.port),
                            check: SiteCheckKey(format!("{check:?}")),
                        };
                        wanted.insert(key, check.clone());
                    }
                }
            }
            running.retain(|key, task| {
                let keep = wanted.contains_key(key) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for (key, check) in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                    let key = slot.key().clone();
                    slot.insert(tokio::spawn(watch_site(
                        key,
                        check,
                        applied.clone(),
                        writer.clone(),
                    )));
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                changed = applied.changed() => if changed.is_err() { break },
            }
        }
        for task in running.values() {
            task.abort();
        }
    })
}

/// Probes one site for ever, committing its verdict's transitions.
async fn watch_site(key: Key, check: SiteCheck, applied: watch::Receiver<Arc<Applied>>, writer: Writer) {
    let committed = applied.borrow().state.site_verdicts().get(&key.name, &key.site);
    let mut up = committed.is_none_or(|v| v.up);
    // Without a committed verdict the site counts as up; the first one
    // reached (`rise` successes or `fall` failures) is committed too.
    let mut known = committed.is_some();
    let mut load = committed.map_or(0, |v| v.load);
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut load_committed_at: Option<Instant> = None;
    let mut seen_load = load;
    let check = check.check;
    loop {
        let started = Instant::now();
        match probe::probe_site(key.address, &check).await {
            Ok(reported) => {
                successes = successes.saturating_add(1);
                failures = 0;
                seen_load = reported.unwrap_or(seen_load);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                successes = 0;
                tracing::debug!(name = %key.name, site = %key.site, error = %e, "GSLB site probe failed");
            }
        }
        let verdict = match up {
            true => failures < check.fall,
            false => successes >= check.rise,
        };
        let load_due = verdict
            && load_moved(load, seen_load)
            && load_committed_at.is_none_or(|at| at.elapsed() >= LOAD_EVERY);
        let first = !known && (successes >= check.rise || failures >= check.fall);
        if verdict != up || load_due || first {
            let command = Command::SetSiteHealth {
                name: key.name.clone(),
                site: key.site.clone(),
                up: verdict,
                load: seen_load,
            };
            match writer.submit(command, false).await {
                Ok((_, outcome)) if outcome.is_applied() => {
                    if verdict != up {
                        let state = if verdict { "up" } else { "down" };
                        tracing::info!(name = %key.name, site = %key.site, state, "GSLB site verdict committed");
                    }
                    up = verdict;
                    known = true;
                    load = seen_load;
                    load_committed_at = Some(Instant::now());
                }
                Ok((_, outcome)) => {
                    tracing::debug!(reason = outcome.rejection(), "GSLB verdict not committed")
                }
                Err(status) => tracing::debug!(reason = status.message(), "GSLB verdict not committed"),
            }
        }
        tokio::time::sleep(check.interval.saturating_sub(started.elapsed())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_moves_by_a_step_and_a_quarter() {
        assert!(!load_moved(0, 9));
        assert!(load_moved(0, 10));
        assert!(!load_moved(100, 120));
        assert!(load_moved(100, 125));
        assert!(load_moved(100, 75));
    }
}
