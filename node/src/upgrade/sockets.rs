//! The process's listening sockets, by [`Key`]: the ones inherited from a
//! predecessor, which every bind site takes before binding anything
//! ([`take`], [`listen_tcp`]), and a duplicate of every one being served,
//! registered by its bind site ([`register`]) and dropped with the
//! [`Registration`], so an upgrade can hand them all to a successor
//! ([`served`]). One registry per process: there is one set of sockets.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What a handed-over descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A data-plane stream listener (`http`, `https`, `tcp`): one socket of
    /// its `SO_REUSEPORT` group.
    Tcp,
    /// A data-plane `udp` listener.
    Udp,
    /// `[node] metrics`.
    Metrics,
    /// The Raft and admin gRPC listener.
    Raft,
    /// The data dir's lock file (not a socket).
    Lock,
    /// The upgrade socket itself (unix, in the data dir).
    Upgrade,
}

/// A descriptor's kind and, for a network listener, its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    pub kind: Kind,
    pub address: Option<SocketAddr>,
}

impl Key {
    pub fn new(kind: Kind, address: SocketAddr) -> Key {
        Key {
            kind,
            address: Some(address),
        }
    }

    /// A descriptor that has no address (the lock, the upgrade socket).
    pub fn unaddressed(kind: Kind) -> Key {
        Key { kind, address: None }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.address {
            Some(address) => write!(f, "{:?} {address}", self.kind),
            None => write!(f, "{:?}", self.kind),
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    inherited: Vec<(Key, OwnedFd)>,
    served: BTreeMap<u64, (Key, OwnedFd)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    inherited: Vec::new(),
    served: BTreeMap::new(),
});
static NEXT: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, Registry> {
    // Nothing panics while holding it; a poisoned registry is still whole.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Adds descriptors received from a predecessor.
pub fn inherit(descriptors: Vec<(Key, OwnedFd)>) {
    registry().inherited.extend(descriptors);
}

/// Takes one inherited descriptor of `key`, if any is left.
pub fn take(key: Key) -> Option<OwnedFd> {
    let mut registry = registry();
    let at = registry.inherited.iter().position(|(k, _)| *k == key)?;
    Some(registry.inherited.swap_remove(at).1)
}

/// Takes every inherited descriptor of `key`.
pub fn take_all(key: Key) -> Vec<OwnedFd> {
    let mut registry = registry();
    let (taken, kept) = std::mem::take(&mut registry.inherited)
        .into_iter()
        .partition(|(k, _)| *k == key);
    registry.inherited = kept;
    taken.into_iter().map(|(_, fd)| fd).collect()
}

/// Closes the inherited descriptors no bind site took (listeners the
/// configuration no longer has) and returns what they were.
pub fn close_unclaimed() -> Vec<Key> {
    std::mem::take(&mut registry().inherited)
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

/// A served descriptor's place in the registry; dropping it forgets the
/// duplicate (a stopped listener must not live on in the registry).
#[derive(Debug)]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        registry().served.remove(&self.0);
    }
}

/// Registers a duplicate of `fd`, being served as `key`, for a successor.
pub fn register(key: Key, fd: BorrowedFd<'_>) -> io::Result<Registration> {
    let duplicate = fd.try_clone_to_owned()?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registry().served.insert(id, (key, duplicate));
    Ok(Registration(id))
}

/// Duplicates of every descriptor being served, for a successor.
pub fn served() -> io::Result<Vec<(Key, OwnedFd)>> {
    registry()
        .served
        .values()
        .map(|(key, fd)| Ok((*key, fd.try_clone()?)))
        .collect()
}

/// A TCP listener on `address` for `kind` (metrics, Raft): the inherited
/// one if there is one, else a new one; registered for a successor.
pub fn listen_tcp(kind: Kind, address: SocketAddr) -> io::Result<(tokio::net::TcpListener, Registration)> {
    let key = Key::new(kind, address);
    let listener: std::net::TcpListener = match take(key) {
        Some(fd) => checked(fd.into(), address)?,
        None => crate::dataplane::listener::tcp_socket(address, false)?.into(),
    };
    listener.set_nonblocking(true)?;
    let registration = register(key, listener.as_fd())?;
    Ok((tokio::net::TcpListener::from_std(listener)?, registration))
}

/// An inherited TCP listener, if it really listens on `address`.
pub fn checked(listener: std::net::TcpListener, address: SocketAddr) -> io::Result<std::net::TcpListener> {
    match listener.local_addr()? {
        found if found == address => Ok(listener),
        found => Err(io::Error::other(format!(
            "the socket inherited for {address} listens on {found}"
        ))),
    }
}
