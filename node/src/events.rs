//! This node's recent events for the status page, in a bounded ring:
//! leader changes and VIP moves (followed by [`follow`] from Raft's
//! metrics and the VIP manager's report), backends going up or down (the
//! health checker) and admin writes with who made them (the admin API).
//! Each node keeps only what it saw; the status page merges the nodes'.

use crate::control::types::Metrics;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events kept; older ones are forgotten.
pub const CAPACITY: usize = 256;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An election, a new leader, or no leader.
    Leader,
    /// This node took or let go of a VIP.
    Vip,
    /// A backend went up or down by this node's checks.
    Backend,
    /// A write through this node's admin API.
    Admin,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Leader => "leader",
            Kind::Vip => "vip",
            Kind::Backend => "backend",
            Kind::Admin => "admin",
        }
    }
}

/// One thing that happened on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increasing per process, from 1.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub kind: Kind,
    pub text: String,
}

/// The ring.
#[derive(Debug, Default)]
pub struct Events {
    ring: Mutex<(u64, VecDeque<Event>)>,
}

impl Events {
    /// Notes `text` now.
    pub fn record(&self, kind: Kind, text: impl Into<String>) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let text = text.into();
        tracing::debug!(kind = kind.name(), %text, "event");
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.0 += 1;
        let seq = ring.0;
        if ring.1.len() == CAPACITY {
            ring.1.pop_front();
        }
        ring.1.push_back(Event {
            seq,
            at_ms,
            kind,
            text,
        });
    }

    /// What the ring holds, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.1.iter().cloned().collect()
    }
}

/// Records leader changes seen in `raft` and VIPs taken or released in
/// `vips` until both senders are gone.
pub fn follow(
    events: std::sync::Arc<Events>,
    mut raft: watch::Receiver<Metrics>,
    mut vips: watch::Receiver<Vec<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut leader = None;
        let mut held: Vec<String> = Vec::new();
        loop {
            let (now_leader, term) = {
                let m = raft.borrow_and_update();
                (m.current_leader, m.current_term)
            };
            if let Some(text) = leader_change(leader, now_leader, term) {
                events.record(Kind::Leader, text);
            }
            leader = Some(now_leader);
            let now_held = vips.borrow_and_update().clone();
            for text in vip_moves(&held, &now_held) {
                events.record(Kind::Vip, text);
            }
            held = now_held;
            tokio::select! {
                changed = raft.changed() => if changed.is_err() { return },
                changed = vips.changed() => if changed.is_err() { return },
            }
        }
    })
}

/// The event, if any, of the known leader going from `before` (`None`:
/// nothing seen yet) to `now`.
fn leader_change(before: Option<Option<u64>>, now: Option<u64>, term: u64) -> Option<String> {
    match (before, now) {
        (Some(b), n) if b == n => None,
        (_, Some(id)) => Some(format!("node {id} leads (term {term})")),
        (Some(Some(old)), None) => Some(format!(
            "node {old} no longer leads; election under way (term {term})"
        )),
        (_, None) => None,
    }
}

/// "took"/"released" sentences for what differs between `before` and `now`.
fn vip_moves(before: &[String], now: &[String]) -> Vec<String> {
    let taken = now
        .iter()
        .filter(|v| !before.contains(v))
        .map(|v| format!("took VIP {v}"));
    let released = before
        .iter()
        .filter(|v| !now.contains(v))
        .map(|v| format!("released VIP {v}"));
    taken.chain(released).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest() {
        let events = Events::default();
        for i in 0..CAPACITY + 10 {
            events.record(Kind::Admin, format!("write {i}"));
        }
        let recent = events.recent();
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent[0].text, "write 10");
        assert_eq!(recent[0].seq, 11);
        assert_eq!(recent.last().map(|e| e.seq), Some((CAPACITY + 10) as u64));
    }

    #[test]
    fn leader_changes_and_vip_moves_read_as_sentences() {
        assert_eq!(leader_change(None, None, 0), None);
        assert_eq!(
            leader_change(None, Some(2), 1).as_deref(),
            Some("node 2 leads (term 1)")
        );
        assert_eq!(leader_change(Some(Some(2)), Some(2), 1), None);
        assert_eq!(
            leader_change(Some(Some(2)), None, 2).as_deref(),
            Some("node 2 no longer leads; election under way (term 2)")
        );
        assert_eq!(leader_change(Some(None), None, 2), None);
        let before = vec!["10.0.0.1/24".to_string()];
        let now = vec!["10.0.0.2/24".to_string()];
        assert_eq!(
            vip_moves(&before, &now),
            vec!["took VIP 10.0.0.2/24", "released VIP 10.0.0.1/24"]
        );
        assert!(vip_moves(&now, &now).is_empty());
    }
}
