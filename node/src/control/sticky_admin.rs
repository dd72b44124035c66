//! The admin API's sticky-session calls (`raftlb ctl sticky stats|get`),
//! answered from this node's own tables: comparing nodes is the point.

use super::state_machine::{Applied, StateMachine};
use crate::sticky::metrics::{StickyMetrics, now_ms};
use raftlb_config::{StickyKey, StickyKind};
use raftlb_proto::admin::{StickyGetReply, StickySession, StickyStatsReply, StickyTable};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;
use tonic::Status;

/// What the sticky calls read.
#[derive(Clone, Debug)]
pub struct StickyAdmin {
    pub machine: StateMachine,
    pub metrics: Arc<StickyMetrics>,
}

impl StickyAdmin {
    pub fn stats(&self, me: u64) -> StickyStatsReply {
        let (index, tables) = self.machine.sticky_stats();
        let m = &self.metrics;
        let lag = m.lag();
        StickyStatsReply {
            node_id: me,
            applied_index: index.map_or(0, |id| id.index),
            tables: tables
                .into_iter()
                .map(|t| StickyTable {
                    pool: t.pool,
                    entries: t.entries as u64,
                    hash: t.hash,
                })
                .collect(),
            hits: m.hits.load(Ordering::Relaxed),
            misses: m.misses.load(Ordering::Relaxed),
            resticks: m.resticks.load(Ordering::Relaxed),
            proposals: m.proposals.load(Ordering::Relaxed),
            failed_proposals: m.failed_proposals.load(Ordering::Relaxed),
            proposals_per_sec: m.proposal_rate(),
            lag_samples: lag.samples as u64,
            lag_p50_ms: lag.p50_ms,
            lag_p99_ms: lag.p99_ms,
            lag_max_ms: lag.max_ms,
        }
    }

    /// Size of the snapshot file.
    pub fn snapshot_bytes(&self) -> u64 {
        self.machine.snapshot_bytes()
    }

    /// The committed sessions `key` names: in `pool`, or in every pool
    /// that keeps a table. For `source_ip` pools the key is a client IP.
    pub fn get(
        &self,
        applied: &watch::Receiver<Arc<Applied>>,
        key: &str,
        pool: &str,
    ) -> Result<StickyGetReply, Status> {
        let state = Arc::clone(&applied.borrow());
        let pools: Vec<_> = state
            .state
            .spec()
            .pools
            .iter()
            .filter(|p| pool.is_empty() || p.name == pool)
            .filter_map(|p| Some((p, p.sticky.as_ref().filter(|s| s.uses_table())?)))
            .collect();
        if pools.is_empty() {
            return Err(Status::not_found(match pool {
                "" => "no pool keeps a sticky table".to_string(),
                name => format!("pool \"{name}\" does not exist or keeps no sticky table"),
            }));
        }
        let tables = self.machine.sticky_tables();
        let mut sessions = Vec::new();
        for (pool, policy) in pools {
            let table_key = match policy.kind {
                StickyKind::SourceIp => match key.parse() {
                    Ok(ip) => policy.source_key(ip),
                    Err(_) => continue,
                },
                _ => StickyKey::of(key.as_bytes()),
            };
            if let Some(session) = tables.lookup(&pool.name, &table_key) {
                sessions.push(StickySession {
                    pool: pool.name.clone(),
                    backend: session.backend.to_string(),
                    age_ms: now_ms().saturating_sub(session.at_ms),
                    key: table_key.to_string(),
                });
            }
        }
        Ok(StickyGetReply { sessions })
    }
}
