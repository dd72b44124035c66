//! W2, the set: clients add unique elements (backends of pool
//! [`POOL`], which no listener uses) through the admin API of the node
//! each is bound to, and after the heal one linearizable read returns the
//! whole set (process `set-final`). Element `e` is the backend
//! 198.19.0.1:(10000 + e). As in W1, an add that times out or finds its node
//! unavailable ends `info` (it may still commit) and its process is
//! replaced; one the state machine refused ends `fail`. C2 judges it.

use super::{admin, write_recorded};
use crate::history::{History, Kind, Op};
use crate::rng::Rng;
use raftlb_config::{BackendSpec, ClusterState, Command};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The pool holding the set.
pub const POOL: &str = "jepsen-set";
/// Elements are numbered below this (one port each).
const MAX_ELEMENTS: u64 = 50_000;

/// Element `e`'s backend address.
pub fn element(e: u64) -> SocketAddr {
    let port = 10_000 + u16::try_from(e % MAX_ELEMENTS).unwrap_or(0);
    SocketAddr::new(Ipv4Addr::new(198, 19, 0, 1).into(), port)
}

/// The elements of the set in `state` (none if the pool is missing).
pub fn elements(state: &ClusterState) -> Vec<u64> {
    let Some(pool) = state.spec().pools.iter().find(|p| p.name == POOL) else {
        return Vec::new();
    };
    let mut elements: Vec<u64> = pool
        .backends
        .iter()
        .filter(|b| b.address.ip() == element(0).ip())
        .map(|b| u64::from(b.address.port()) - 10_000)
        .collect();
    elements.sort_unstable();
    elements
}

/// One add of element `e` through `admin` as `process`, recorded; how it
/// ended.
async fn add(
    history: &History,
    admin: &mut raftlb_tests::admin::Admin,
    process: &str,
    node: usize,
    e: u64,
) -> Kind {
    let op = |kind| {
        Op::new(process, kind, "add", history.now())
            .value(Some(e))
            .node(node)
    };
    let command = Command::AddBackend {
        pool: POOL.to_string(),
        backend: BackendSpec::new(element(e)),
    };
    write_recorded(history, admin, &command, op).await
}

/// W2: `processes` clients (client i talks to node (i + 1) mod 3, so not
/// the node W1's client i uses) adding fresh elements until `until`.
pub async fn adds(history: History, nodes: Vec<Ipv4Addr>, processes: usize, until: Instant, mut rng: Rng) {
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for slot in 0..processes {
        let (history, next, mut rng) = (history.clone(), Arc::clone(&next), rng.fork(slot as u64));
        let node = (slot + 1) % nodes.len();
        let mut admin = admin(nodes[node]);
        clients.spawn(async move {
            let mut process = slot;
            loop {
                tokio::time::sleep(rng.millis(50, 200)).await;
                let e = next.fetch_add(1, Ordering::Relaxed);
                if Instant::now() >= until || e >= MAX_ELEMENTS {
                    break;
                }
                if add(&history, &mut admin, &format!("s{process}"), node, e).await == Kind::Info {
                    process += processes;
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
}

/// The final read: the set as a linearizable read through any node that
/// answers within `deadline`, recorded as process `set-final`. `None` if
/// no node answered.
pub async fn final_read(history: History, nodes: Vec<Ipv4Addr>, deadline: Duration) -> Option<Vec<u64>> {
    let start = Instant::now();
    for attempt in 0usize.. {
        if start.elapsed() > deadline {
            return None;
        }
        let node = attempt % nodes.len();
        let op = |kind| Op::new("set-final", kind, "read", history.now()).node(node);
        history.record(op(Kind::Invoke));
        match admin(nodes[node]).read(false).await {
            Ok((state, _)) => {
                let elements = elements(&state);
                history.record(op(Kind::Ok).values(elements.clone()));
                return Some(elements);
            }
            Err(status) => {
                history.record(op(Kind::Fail).error(status.message().to_string()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_map_to_distinct_backends_and_back() {
        let a = element(0);
        let b = element(49_999);
        assert_ne!(a, b);
        assert_eq!(a.port(), 10_000);
        assert_eq!(b.port(), 59_999);
    }
}
