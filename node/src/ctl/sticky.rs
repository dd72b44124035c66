//! `raftlb ctl sticky stats|get|flush`. `stats` asks every member for its
//! own tables (entries and hash per pool at an applied index), so nodes can
//! be compared; `get` shows the session a key names on the node asked;
//! `flush` forgets a pool's sessions through Raft.

use super::client::Client;
use super::status::PER_NODE_TIMEOUT;
use crate::control::transport::Dialer;
use crate::pki::Expect;
use raftlb_proto::admin::{StickyGetReply, StickyStatsReply};
use serde::Serialize;
use std::time::Duration;

/// One member's answer to `sticky stats`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStickyStats {
    pub id: u64,
    pub address: String,
    /// What the member said, or why it could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<NodeStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    pub applied_index: u64,
    pub tables: Vec<TableLine>,
    pub hits: u64,
    pub misses: u64,
    pub resticks: u64,
    pub proposals: u64,
    pub failed_proposals: u64,
    pub proposals_per_sec: f64,
    pub lag_samples: u64,
    pub lag_p50_ms: u32,
    pub lag_p99_ms: u32,
    pub lag_max_ms: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableLine {
    pub pool: String,
    pub entries: u64,
    /// Hex, equal on nodes whose tables agree.
    pub hash: String,
}

impl NodeStats {
    fn of(reply: StickyStatsReply) -> Self {
        NodeStats {
            applied_index: reply.applied_index,
            tables: reply
                .tables
                .into_iter()
                .map(|t| TableLine {
                    pool: t.pool,
                    entries: t.entries,
                    hash: format!("{:016x}", t.hash),
                })
                .collect(),
            hits: reply.hits,
            misses: reply.misses,
            resticks: reply.resticks,
            proposals: reply.proposals,
            failed_proposals: reply.failed_proposals,
            proposals_per_sec: reply.proposals_per_sec,
            lag_samples: reply.lag_samples,
            lag_p50_ms: reply.lag_p50_ms,
            lag_p99_ms: reply.lag_p99_ms,
            lag_max_ms: reply.lag_max_ms,
        }
    }
}

/// Asks every member of `first`'s cluster for its sticky stats.
pub async fn gather(
    first: &mut Client,
    dialer: &Dialer,
    timeout: Duration,
) -> Result<Vec<MemberStickyStats>, String> {
    let status = first.status().await.map_err(|e| e.to_string())?;
    let mut members = Vec::new();
    for member in &status.members {
        let stats = if member.id == status.node_id {
            first.sticky_stats().await
        } else {
            match Client::connect(
                &member.address,
                dialer,
                Expect::Node(member.id),
                timeout.min(PER_NODE_TIMEOUT),
            )
            .await
            {
                Ok(mut client) => client.sticky_stats().await,
                Err(e) => Err(e),
            }
        };
        let (stats, unreachable) = match stats {
            Ok(reply) => (Some(NodeStats::of(reply)), None),
            Err(e) => (None, Some(e.reason())),
        };
        members.push(MemberStickyStats {
            id: member.id,
            address: member.address.clone(),
            stats,
            unreachable,
        });
    }
    members.sort_by_key(|m| m.id);
    Ok(members)
}

/// The human form of `sticky stats`.
pub fn format_stats(members: &[MemberStickyStats]) -> String {
    let mut out = String::new();
    for member in members {
        let Some(stats) = &member.stats else {
            let reason = member.unreachable.as_deref().unwrap_or("no answer");
            out.push_str(&format!(
                "node {} ({}): unreachable: {reason}\n",
                member.id, member.address
            ));
            continue;
        };
        out.push_str(&format!(
            "node {} ({}), applied index {}: {} hits, {} misses, {} re-sticks; {} proposals ({:.1}/s), {} failed; lag p50 {} ms, p99 {} ms, max {} ms over {} sessions\n",
            member.id,
            member.address,
            stats.applied_index,
            stats.hits,
            stats.misses,
            stats.resticks,
            stats.proposals,
            stats.proposals_per_sec,
            stats.failed_proposals,
            stats.lag_p50_ms,
            stats.lag_p99_ms,
            stats.lag_max_ms,
            stats.lag_samples,
        ));
        if stats.tables.is_empty() {
            out.push_str("  no sticky sessions\n");
        }
        for table in &stats.tables {
            out.push_str(&format!(
                "  pool {}: {} entries, hash {}\n",
                table.pool, table.entries, table.hash
            ));
        }
    }
    out
}

/// The human form of `sticky get`.
pub fn format_get(key: &str, reply: &StickyGetReply) -> String {
    if reply.sessions.is_empty() {
        return format!("no session for \"{key}\"\n");
    }
    reply
        .sessions
        .iter()
        .map(|s| {
            format!(
                "pool {}: {} (stuck or refreshed {:.1} s ago; key {})\n",
                s.pool,
                s.backend,
                s.age_ms as f64 / 1000.0,
                s.key
            )
        })
        .collect()
}
