//! Sessions this node has stuck (or is refreshing) whose proposal has not
//! come back yet. They are served at once, ahead of the committed table,
//! and dropped when the proposal is applied, refused or lost: from then on
//! the committed table answers.

use raftlb_config::{Session, StickyKey};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

const SHARDS: usize = 16;

#[derive(Debug)]
pub(super) struct Pending {
    shards: Vec<Mutex<HashMap<(String, StickyKey), Session>>>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Pending {
    fn shard(&self, key: &StickyKey) -> std::sync::MutexGuard<'_, HashMap<(String, StickyKey), Session>> {
        self.shards[usize::from(key.0[1]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, pool: &str, key: &StickyKey) -> Option<Session> {
        let shard = self.shard(key);
        if shard.is_empty() {
            return None;
        }
        shard.get(&(pool.to_string(), *key)).copied()
    }

    /// Records `session` unless one is already in flight for the key;
    /// returns whether it was recorded.
    pub fn insert(&self, pool: &str, key: StickyKey, session: Session, replace: bool) -> bool {
        let mut shard = self.shard(&key);
        let slot = shard.entry((pool.to_string(), key));
        match slot {
            std::collections::hash_map::Entry::Occupied(mut e) if replace => {
                e.insert(session);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(session);
                true
            }
        }
    }

    /// Drops the entry if it is still `session` (a later one stays).
    pub fn settle(&self, pool: &str, key: &StickyKey, session: Session) {
        let mut shard = self.shard(key);
        let id = (pool.to_string(), *key);
        if shard.get(&id) == Some(&session) {
            shard.remove(&id);
        }
    }
}
