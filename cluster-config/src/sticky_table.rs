//! [`StickyTables`]: the committed sticky sessions of every pool, changed
//! only by applying [`StickyChange`]s in log order, so every node holds the
//! same entries. Unlike [`ClusterState`](crate::ClusterState) it is not
//! copied on change: it can hold millions of entries, so it is changed in
//! place and read concurrently by the data plane. Each pool's table is split
//! into shards, each behind its own read-write lock: a lookup locks one
//! shard for a hash probe, and the leader's expiry pass walks one shard at a
//! time.
//!
//! An entry is 32 bytes in its hash slot: the 16-byte key, the time it was
//! last stuck or refreshed, and its backend as an index into the shard's
//! list of backend addresses. Each pool table keeps an order-independent
//! hash of its entries (the wrapping sum of one FNV-1a hash per entry),
//! updated with every change, so nodes can be compared cheaply.
//!
//! A table holds at most its policy's `max_entries`: a new session in a
//! full table first evicts the oldest entry, the one with the smallest
//! (time, key), which an ordered index beside the shards finds. Only
//! applying touches the index, so lookups never wait for it.

use crate::command::Outcome;
use crate::spec::ClusterSpec;
use crate::sticky::{StickyChange, StickyKey};
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

const SHARDS: usize = 16;

/// Every pool's committed sessions.
#[derive(Debug, Default)]
pub struct StickyTables {
    pools: RwLock<BTreeMap<String, Arc<PoolTable>>>,
}

/// A session as a lookup returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub backend: SocketAddr,
    /// When it was stuck or last refreshed (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One pool's table as `ctl sticky stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    pub pool: String,
    pub entries: usize,
    /// Order-independent hash of every entry: equal on nodes that agree.
    pub hash: u64,
}

#[derive(Debug)]
struct PoolTable {
    shards: Vec<RwLock<Shard>>,
    /// Every entry as (time, key), oldest first: the eviction order. Taken
    /// before any shard, and only while applying.
    ages: Mutex<Ages>,
}

type Ages = BTreeSet<(u64, StickyKey)>;

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<StickyKey, Slot>,
    /// The backend addresses entries point at (a few per pool).
    backends: Vec<SocketAddr>,
    hash: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    backend: u32,
    at_ms: u64,
}

/// What a snapshot holds: each pool's entries.
type Dump = Vec<(String, Vec<(StickyKey, SocketAddr, u64)>)>;

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StickyTables {
    /// The committed session of `key` in `pool`.
    pub fn lookup(&self, pool: &str, key: &StickyKey) -> Option<Session> {
        let table = read(&self.pools).get(pool).cloned()?;
        let shard = read(table.shard(key));
        let slot = shard.entries.get(key)?;
        Some(Session {
            backend: shard.backends[slot.backend as usize],
            at_ms: slot.at_ms,
        })
    }

    /// Entries and hash of every pool that has any.
    pub fn stats(&self) -> Vec<TableStats> {
        read(&self.pools)
            .iter()
            .map(|(pool, table)| {
                let (entries, hash) = table.shards.iter().fold((0, 0u64), |(n, h), shard| {
                    let shard = read(shard);
                    (n + shard.entries.len(), h.wrapping_add(shard.hash))
                });
                TableStats {
                    pool: pool.clone(),
                    entries,
                    hash,
                }
            })
            .collect()
    }

    /// Applies one change; `spec` is the cluster state it applies against
    /// (which pools are sticky, their ttl and backends).
    pub fn apply(&self, spec: &ClusterSpec, change: StickyChange) -> Outcome {
        match change {
            StickyChange::Stick {
                pool,
                key,
                backend,
                replaces,
                at_ms,
            } => {
                let Some(pool_spec) = spec.pool(&pool) else {
                    return Outcome::Rejected(format!("no pool named \"{pool}\""));
                };
                let Some(policy) = pool_spec.sticky.as_ref().filter(|s| s.uses_table()) else {
                    return Outcome::Rejected(format!("pool \"{pool}\" keeps no sticky table"));
                };
                if !pool_spec.backends.iter().any(|b| b.address == backend) {
                    return Outcome::Rejected(format!("no backend {backend} in pool \"{pool}\""));
                }
                let table = self.table(&pool);
                match table.stick(key, backend, replaces, at_ms, max_entries(policy.max_entries)) {
                    Ok(()) => Outcome::Applied,
                    Err(reason) => Outcome::Rejected(reason),
                }
            }
            StickyChange::Expire { now_ms } => {
                let pools: Vec<_> = {
                    let mut pools = write(&self.pools);
                    pools.retain(|name, _| spec.pool(name).is_some_and(|p| p.sticky.is_some()));
                    pools.iter().map(|(n, t)| (n.clone(), Arc::clone(t))).collect()
                };
                // Shard by shard: lookups elsewhere go on meanwhile.
                for (name, table) in pools {
                    let Some(pool) = spec.pool(&name) else { continue };
                    let Some(policy) = &pool.sticky else { continue };
                    let ttl = u64::try_from(policy.ttl.as_millis()).unwrap_or(u64::MAX);
                    // One set per pool: a shard asks about each backend it knows.
                    let in_pool: HashSet<SocketAddr> = pool.backends.iter().map(|b| b.address).collect();
                    let mut ages = lock(&table.ages);
                    for shard in &table.shards {
                        for gone in write(shard).expire(now_ms, ttl, |b| in_pool.contains(&b)) {
                            ages.remove(&gone);
                        }
                    }
                    // A table over a `max_entries` lowered since.
                    table.evict(&mut ages, max_entries(policy.max_entries));
                }
                Outcome::Applied
            }
            StickyChange::Flush { pool } => {
                if spec.pool(&pool).is_none() {
                    return Outcome::Rejected(format!("no pool named \"{pool}\""));
                }
                write(&self.pools).remove(&pool);
                Outcome::Applied
            }
        }
    }

    /// Replaces every table with what a snapshot holds.
    pub fn restore(&self, snapshot: &[u8]) -> Result<(), postcard::Error> {
        let dump: Dump = postcard::from_bytes(snapshot)?;
        let mut pools = BTreeMap::new();
        for (name, entries) in dump {
            let table = PoolTable::new();
            for (key, backend, at_ms) in entries {
                let _ = write(table.shard(&key)).stick(key, backend, None, at_ms);
            }
            // A snapshot is of a table within its bounds; the index is
            // rebuilt from what the shards hold, in one sorted pass.
            let ages: Ages = table
                .shards
                .iter()
                .flat_map(|shard| {
                    let shard = read(shard);
                    shard
                        .entries
                        .iter()
                        .map(|(key, slot)| (slot.at_ms, *key))
                        .collect::<Vec<_>>()
                })
                .collect();
            *lock(&table.ages) = ages;
            pools.insert(name, Arc::new(table));
        }
        *write(&self.pools) = pools;
        Ok(())
    }

    /// Appends the tables, as a snapshot holds them, to `out`. The caller
    /// keeps changes out while this runs, so the copy is of one log position.
    pub fn snapshot_into(&self, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_extend(&DumpView(self), out)
    }

    fn table(&self, pool: &str) -> Arc<PoolTable> {
        if let Some(table) = read(&self.pools).get(pool) {
            return Arc::clone(table);
        }
        let mut pools = write(&self.pools);
        Arc::clone(
            pools
                .entry(pool.to_string())
                .or_insert_with(|| Arc::new(PoolTable::new())),
        )
    }
}

/// A policy's `max_entries` as a length.
fn max_entries(max: u64) -> usize {
    usize::try_from(max).unwrap_or(usize::MAX)
}

impl PoolTable {
    fn new() -> Self {
        PoolTable {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            ages: Mutex::default(),
        }
    }

    fn shard(&self, key: &StickyKey) -> &RwLock<Shard> {
        &self.shards[usize::from(key.0[0]) % SHARDS]
    }

    /// Sticks `key` (see [`Shard::stick`]); a new key first evicts the
    /// oldest entries until it fits in `max_entries`.
    fn stick(
        &self,
        key: StickyKey,
        backend: SocketAddr,
        replaces: Option<SocketAddr>,
        at_ms: u64,
        max_entries: usize,
    ) -> Result<(), String> {
        let mut ages = lock(&self.ages);
        let before = read(self.shard(&key)).entries.get(&key).map(|slot| slot.at_ms);
        if before.is_none() {
            // A new key is never refused, so it is safe to make room first.
            self.evict(&mut ages, max_entries.saturating_sub(1));
        }
        let after = write(self.shard(&key)).stick(key, backend, replaces, at_ms)?;
        if let Some(before) = before {
            ages.remove(&(before, key));
        }
        ages.insert((after, key));
        Ok(())
    }

    /// Forgets the oldest entries until at most `keep` are left.
    fn evict(&self, ages: &mut Ages, keep: usize) {
        while ages.len() > keep {
            let Some((_, key)) = ages.pop_first() else { return };
            write(self.shard(&key)).remove(&key);
        }
    }
}

impl Shard {
    /// Sticks `key` to `backend` unless the table holds another backend
    /// for it than `replaces`; returns the time the entry now carries.
    fn stick(
        &mut self,
        key: StickyKey,
        backend: SocketAddr,
        replaces: Option<SocketAddr>,
        at_ms: u64,
    ) -> Result<u64, String> {
        let index = self.intern(backend);
        if let Some(slot) = self.entries.get(&key).copied() {
            let current = self.backends[slot.backend as usize];
            if current != backend && replaces != Some(current) {
                return Err(format!("session {key} is already stuck to {current}"));
            }
            self.hash = self.hash.wrapping_sub(entry_hash(&key, current, slot.at_ms));
        }
        // A refresh never moves a session's time backwards.
        let at_ms = match self.entries.get(&key) {
            Some(slot) if slot.backend == index => slot.at_ms.max(at_ms),
            _ => at_ms,
        };
        self.entries.insert(
            key,
            Slot {
                backend: index,
                at_ms,
            },
        );
        self.hash = self.hash.wrapping_add(entry_hash(&key, backend, at_ms));
        Ok(at_ms)
    }

    fn remove(&mut self, key: &StickyKey) {
        if let Some(slot) = self.entries.remove(key) {
            let backend = self.backends[slot.backend as usize];
            self.hash = self.hash.wrapping_sub(entry_hash(key, backend, slot.at_ms));
        }
        if self.entries.is_empty() {
            self.backends.clear();
        }
    }

    /// Forgets what expired or lost its backend; returns what it forgot as
    /// (time, key).
    fn expire(
        &mut self,
        now_ms: u64,
        ttl_ms: u64,
        in_pool: impl Fn(SocketAddr) -> bool,
    ) -> Vec<(u64, StickyKey)> {
        let live: Vec<bool> = self.backends.iter().map(|b| in_pool(*b)).collect();
        let mut hash = self.hash;
        let mut gone = Vec::new();
        let backends = &self.backends;
        self.entries.retain(|key, slot| {
            let keep = live[slot.backend as usize] && slot.at_ms.saturating_add(ttl_ms) > now_ms;
            if !keep {
                hash = hash.wrapping_sub(entry_hash(key, backends[slot.backend as usize], slot.at_ms));
                gone.push((slot.at_ms, *key));
            }
            keep
        });
        self.hash = hash;
        if self.entries.is_empty() {
            self.backends.clear();
        }
        gone
    }

    fn intern(&mut self, backend: SocketAddr) -> u32 {
        match self.backends.iter().position(|b| *b == backend) {
            Some(index) => index as u32,
            None => {
                self.backends.push(backend);
                (self.backends.len() - 1) as u32
            }
        }
    }
}

/// FNV-1a over the entry's key, backend and time: stable across nodes and
/// versions (unlike std's hasher).
fn entry_hash(key: &StickyKey, backend: SocketAddr, at_ms: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&key.0);
    match backend.ip() {
        std::net::IpAddr::V4(ip) => eat(&ip.octets()),
        std::net::IpAddr::V6(ip) => eat(&ip.octets()),
    }
    eat(&backend.port().to_be_bytes());
    eat(&at_ms.to_be_bytes());
    hash
}

/// Serializes the tables in [`Dump`]'s shape without copying them.
struct DumpView<'a>(&'a StickyTables);

impl Serialize for DumpView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pools = read(&self.0.pools);
        let mut seq = serializer.serialize_seq(Some(pools.len()))?;
        for (name, table) in pools.iter() {
            seq.serialize_element(&(name, PoolView(table)))?;
        }
        seq.end()
    }
}

struct PoolView<'a>(&'a PoolTable);

impl Serialize for PoolView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shards: Vec<_> = self.0.shards.iter().map(read).collect();
        let len = shards.iter().map(|s| s.entries.len()).sum();
        let mut seq = serializer.serialize_seq(Some(len))?;
        for shard in &shards {
            for (key, slot) in &shard.entries {
                seq.serialize_element(&EntryView(key, shard.backends[slot.backend as usize], slot.at_ms))?;
            }
        }
        seq.end()
    }
}

struct EntryView<'a>(&'a StickyKey, SocketAddr, u64);

impl Serialize for EntryView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(3)?;
        tuple.serialize_element(self.0)?;
        tuple.serialize_element(&self.1)?;
        tuple.serialize_element(&self.2)?;
        tuple.end()
    }
}
