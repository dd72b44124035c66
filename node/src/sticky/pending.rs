//! Sessions this node has stuck (or is refreshing) whose proposal has not
//! come back yet. They are served at once, ahead of the committed table,
//! and dropped when the proposal is applied, refused or lost: from then on
//! the committed table answers.

use raftlb_config::{Session, StickyKey};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

const SHARDS: usize = 16;

/// Per shard: pool name → session key → session. Looking up borrows the
/// pool's name (no allocation on the request path).
type Shard = HashMap<String, HashMap<StickyKey, Session>>;

#[derive(Debug)]
pub(super) struct Pending {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Pending {
    fn shard(&self, key: &StickyKey) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[usize::from(key.0[1]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, pool: &str, key: &StickyKey) -> Option<Session> {
        self.shard(key).get(pool)?.get(key).copied()
    }

    /// Records `session` unless one is already in flight for the key;
    /// returns whether it was recorded.
    pub fn insert(&self, pool: &str, key: StickyKey, session: Session, replace: bool) -> bool {
        let mut shard = self.shard(&key);
        let sessions = match shard.get_mut(pool) {
            Some(sessions) => sessions,
            None => shard.entry(pool.to_string()).or_default(),
        };
        if !replace && sessions.contains_key(&key) {
            return false;
        }
        sessions.insert(key, session);
        true
    }

    /// Drops the entry if it is still `session` (a later one stays).
    pub fn settle(&self, pool: &str, key: &StickyKey, session: Session) {
        let mut shard = self.shard(key);
        let Some(sessions) = shard.get_mut(pool) else {
            return;
        };
        if sessions.get(key) == Some(&session) {
            sessions.remove(key);
        }
        if sessions.is_empty() {
            shard.remove(pool);
        }
    }
}
