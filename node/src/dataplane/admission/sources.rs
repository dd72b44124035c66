//! [`SourceTable`]: what each client source (an address, or the network of
//! the listener's `source_prefix` holding it) is doing on one listener of
//! this node — connections held, and a token bucket each for new
//! connections and for requests.
//!
//! The table has a fixed size, so millions of sources (spoofed UDP ones,
//! say) cannot grow it: [`SLOTS`] entries in sets of [`WAYS`], a source's
//! set chosen by a keyed hash (an attacker cannot aim at one set). A new
//! source in a full set takes the place of the set's least recently seen
//! source holding no connection, else of its least recently seen one
//! (whose counts are then forgotten: a source that shares a set with
//! [`WAYS`] busier ones is counted afresh). Each set has its own lock,
//! held for a few loads and stores; the memory is taken at the first
//! counted client, so a listener without limits costs nothing.

use raftlb_config::ClientLimits;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

/// Sources one listener tracks on one node.
pub const SLOTS: usize = 32 * 1024;
/// Sources per set.
pub const WAYS: usize = 4;
const SETS: usize = SLOTS / WAYS;

/// A source, as the table keys it: the masked address (IPv4 in its
/// IPv4-mapped IPv6 form, so the two families never collide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceKey(u128);

impl SourceKey {
    pub fn of(source: IpAddr, limits: &ClientLimits) -> SourceKey {
        SourceKey(match source.to_canonical() {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()) & prefix_mask(96 + limits.source_prefix.min(32)),
            IpAddr::V6(a) => u128::from(a) & prefix_mask(limits.source_prefix_v6.min(128)),
        })
    }
}

/// The first `len` bits of 128 set.
fn prefix_mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Why a source may not do what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// It holds `connections` already.
    Connections,
    /// Its new-connection bucket is empty.
    ConnectionRate,
    /// Its request bucket is empty; a token is due in this many ms.
    RequestRate { retry_in_ms: u64 },
}

/// A token bucket in thousandths of a token, refilled by elapsed time.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    milli_tokens: u64,
    stamp_ms: u64,
}

impl Bucket {
    fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            milli_tokens: u64::from(burst) * 1000,
            stamp_ms: now_ms,
        }
    }

    /// Takes one token at `rate` per second, holding at most `burst`;
    /// `Err` with the ms until one is due. A rate of 0 never refuses.
    fn take(&mut self, rate: u32, burst: u32, now_ms: u64) -> Result<(), u64> {
        if rate == 0 {
            return Ok(());
        }
        let elapsed = now_ms.saturating_sub(self.stamp_ms);
        self.stamp_ms = now_ms.max(self.stamp_ms);
        // A rate per second is exactly that many milli-tokens per ms.
        let refilled = self
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(u64::from(rate)));
        self.milli_tokens = refilled.min(u64::from(burst.max(1)) * 1000);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            Ok(())
        } else {
            Err((1000 - self.milli_tokens).div_ceil(u64::from(rate)))
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u128,
    used: bool,
    connections: u32,
    last_ms: u64,
    new_connections: Bucket,
    requests: Bucket,
}

/// One listener's sources on this node (see the module doc).
#[derive(Debug, Default)]
pub struct SourceTable {
    sets: OnceLock<Box<[Mutex<[Slot; WAYS]>]>>,
    hasher: std::collections::hash_map::RandomState,
}

impl SourceTable {
    /// A new connection (or UDP session) from `key`: refused if the source
    /// holds its limit of connections or has used up its new-connection
    /// burst; else counted until [`disconnect`](Self::disconnect).
    pub fn connect(&self, key: SourceKey, limits: &ClientLimits, now_ms: u64) -> Result<(), Exceeded> {
        self.with_slot(key, limits, now_ms, |slot| {
            if limits.connections != 0 && slot.connections >= limits.connections {
                return Err(Exceeded::Connections);
            }
            slot.new_connections
                .take(limits.connection_rate, limits.connection_burst, now_ms)
                .map_err(|_| Exceeded::ConnectionRate)?;
            slot.connections += 1;
            Ok(())
        })
    }

    /// A connection [`connect`](Self::connect) counted has closed.
    pub fn disconnect(&self, key: SourceKey) {
        let Some(sets) = self.sets.get() else { return };
        let mut set = lock(&sets[self.set_of(key)]);
        if let Some(slot) = set.iter_mut().find(|s| s.used && s.key == key.0) {
            slot.connections = slot.connections.saturating_sub(1);
        }
    }

    /// One HTTP request from `key`: refused, with when to retry, if its
    /// request bucket is empty.
    pub fn request(&self, key: SourceKey, limits: &ClientLimits, now_ms: u64) -> Result<(), Exceeded> {
        if limits.request_rate == 0 {
            return Ok(());
        }
        self.with_slot(key, limits, now_ms, |slot| {
            slot.requests
                .take(limits.request_rate, limits.request_burst, now_ms)
                .map_err(|retry_in_ms| Exceeded::RequestRate { retry_in_ms })
        })
    }

    /// Sources the table holds now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.sets.get().map_or(0, |sets| {
            sets.iter()
                .map(|s| lock(s).iter().filter(|slot| slot.used).count())
                .sum()
        })
    }

    fn set_of(&self, key: SourceKey) -> usize {
        (self.hasher.hash_one(key.0) as usize) % SETS
    }

    /// Runs `f` on `key`'s slot, making one (see the module doc) if the
    /// source is new.
    fn with_slot<T>(
        &self,
        key: SourceKey,
        limits: &ClientLimits,
        now_ms: u64,
        f: impl FnOnce(&mut Slot) -> T,
    ) -> T {
        let sets = self
            .sets
            .get_or_init(|| (0..SETS).map(|_| Mutex::new([Slot::default(); WAYS])).collect());
        let mut set = lock(&sets[self.set_of(key)]);
        let index = match set.iter().position(|s| s.used && s.key == key.0) {
            Some(found) => found,
            None => {
                let victim = set
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| (s.used, s.connections > 0, s.last_ms))
                    .map_or(0, |(i, _)| i);
                set[victim] = Slot {
                    key: key.0,
                    used: true,
                    connections: 0,
                    last_ms: now_ms,
                    new_connections: Bucket::full(limits.connection_burst, now_ms),
                    requests: Bucket::full(limits.request_burst, now_ms),
                };
                victim
            }
        };
        let slot = &mut set[index];
        slot.last_ms = now_ms;
        f(slot)
    }
}

/// A set's lock; a panic elsewhere while holding it left plain counters,
/// still usable.
fn lock(set: &Mutex<[Slot; WAYS]>) -> std::sync::MutexGuard<'_, [Slot; WAYS]> {
    set.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ClientLimits {
        ClientLimits {
            connections: 2,
            connection_rate: 10,
            connection_burst: 3,
            request_rate: 100,
            request_burst: 100,
            ..ClientLimits::default()
        }
    }

    fn key(address: &str) -> SourceKey {
        SourceKey::of(address.parse().unwrap(), &limits())
    }

    #[test]
    fn connections_are_held_to_the_limit_and_freed_on_close() {
        let (table, limits) = (SourceTable::default(), limits());
        let source = key("198.18.0.1");
        assert_eq!(table.connect(source, &limits, 0), Ok(()));
        assert_eq!(table.connect(source, &limits, 0), Ok(()));
        assert_eq!(table.connect(source, &limits, 0), Err(Exceeded::Connections));
        assert_eq!(table.connect(key("198.18.0.2"), &limits, 0), Ok(()));
        table.disconnect(source);
        assert_eq!(table.connect(source, &limits, 0), Ok(()));
    }

    #[test]
    fn the_new_connection_rate_refills_with_time() {
        let table = SourceTable::default();
        let limits = ClientLimits {
            connections: 0,
            ..limits()
        };
        let source = key("198.18.0.1");
        for _ in 0..3 {
            assert_eq!(table.connect(source, &limits, 1000), Ok(()));
        }
        assert_eq!(
            table.connect(source, &limits, 1000),
            Err(Exceeded::ConnectionRate)
        );
        // 10 per second: one token every 100 ms.
        assert_eq!(
            table.connect(source, &limits, 1050),
            Err(Exceeded::ConnectionRate)
        );
        assert_eq!(table.connect(source, &limits, 1100), Ok(()));
    }

    #[test]
    fn requests_are_refused_with_the_time_to_the_next_token() {
        let table = SourceTable::default();
        let limits = ClientLimits {
            request_rate: 4,
            request_burst: 4,
            ..limits()
        };
        let source = key("2001:db8::1");
        for _ in 0..4 {
            assert_eq!(table.request(source, &limits, 0), Ok(()));
        }
        assert_eq!(
            table.request(source, &limits, 0),
            Err(Exceeded::RequestRate { retry_in_ms: 250 })
        );
        // The same /64 is the same source.
        assert!(table.request(key("2001:db8::ffff"), &limits, 0).is_err());
        assert_eq!(table.request(key("2001:db8:0:1::1"), &limits, 0), Ok(()));
    }

    #[test]
    fn a_million_sources_leave_the_table_at_its_size() {
        let (table, limits) = (SourceTable::default(), limits());
        for i in 0..1_000_000u32 {
            let source = SourceKey::of(IpAddr::from(i.to_be_bytes()), &limits);
            let _ = table.connect(source, &limits, u64::from(i));
            table.disconnect(source);
        }
        assert_eq!(table.tracked(), SLOTS);
    }

    #[test]
    fn a_busy_source_keeps_its_place_against_idle_newcomers() {
        let (table, limits) = (SourceTable::default(), limits());
        let busy = key("198.18.0.1");
        table.connect(busy, &limits, 0).unwrap();
        table.connect(busy, &limits, 0).unwrap();
        for i in 0..200_000u32 {
            let source = SourceKey::of(IpAddr::from(((i + 1) << 8).to_be_bytes()), &limits);
            let _ = table.connect(source, &limits, 1 + u64::from(i));
            table.disconnect(source);
        }
        assert_eq!(table.connect(busy, &limits, 300_000), Err(Exceeded::Connections));
    }
}
