//! The client workloads, run from the client host's namespace; W2 (the
//! set) is in [`set`], W3 (sticky sessions) in [`sticky`]. W1: an
//! admin register per key — key k is the weight of marker backend k in
//! pool `jepsen`, written with `SetWeight` and read linearizably
//! (`stale = false`) by several client processes, each bound to one node.
//! A write that times out or finds the node unavailable ends `info` (it may
//! still commit) and its process is replaced, as a crashed Jepsen process
//! is; a read that does not answer ends `fail`. W4 (traffic through the VIP)
//! is the site's constant-rate load, which gives up on a connection after
//! 25 ms (so an outage shows at once), plus a patient one that waits 3 s
//! as a browser would (SYN retries; so a planned handover must fail none
//! of its requests); [`vip_ops`] turns both into history.
//! Also here: the cluster checks after the heal (C7), which need the same
//! admin clients.

pub mod set;
pub mod sticky;

use crate::history::{History, Kind, Op};
use crate::rng::Rng;
use raftlb_config::{BackendSpec, ClusterState, Command};
use raftlb_tests::admin::Admin;
use raftlb_tests::site::{self, Attempt};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Register keys (marker backends).
pub const KEYS: u32 = 3;
/// The pool holding them; no listener sends traffic to it.
pub const POOL: &str = "jepsen";
/// Every register's value before the first write: a new backend's weight.
pub const INITIAL: u64 = BackendSpec::DEFAULT_WEIGHT as u64;
/// How long one admin call may take before it counts as unanswered.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Key `key`'s marker backend.
pub fn marker(key: u32) -> SocketAddr {
    raftlb_tests::cluster::marker(key)
}

/// An admin client to the balancer at `address`, with the site's credentials.
pub fn admin(address: Ipv4Addr) -> Admin {
    Admin::with_credentials(&format!("{address}:7000"), CALL_TIMEOUT, site::CLUSTER)
}

/// Key `key`'s value in `state`, if the marker is there.
pub fn weight(state: &ClusterState, key: u32) -> Option<u64> {
    let pool = state.spec().pools.iter().find(|p| p.name == POOL)?;
    let backend = pool.backends.iter().find(|b| b.address == marker(key))?;
    Some(u64::from(backend.weight))
}

/// Runs `make()` to completion on a new thread inside namespace `ns` (so
/// its sockets live there), on a runtime of its own; the receiver yields
/// the result, or an error if the thread panicked.
pub fn in_ns<T, F, Fut>(ns: &str, make: F) -> tokio::sync::oneshot::Receiver<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        raftlb_tests::netns::enter(&ns);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime in the namespace");
        let _ = tx.send(runtime.block_on(make()));
    });
    rx
}

/// Adds pool `jepsen` (W1: pool `app`'s settings, the marker backends at
/// the initial weight) and pool `jepsen-set` (W2: a sentinel backend
/// outside the set) through any node that answers, within `deadline`.
pub async fn setup(nodes: Vec<Ipv4Addr>, deadline: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut last = String::new();
    for attempt in 0usize.. {
        if start.elapsed() > deadline {
            return Err(format!(
                "could not add pools {POOL} and {} within {deadline:?}: {last}",
                set::POOL
            ));
        }
        let mut admin = admin(nodes[attempt % nodes.len()]);
        match admin.read(false).await {
            Ok((state, _)) => {
                let pools = &state.spec().pools;
                let Some(app) = pools.iter().find(|p| p.name == "app") else {
                    return Err("the site has no pool app".to_string());
                };
                let mut missing = Vec::new();
                if weight(&state, 0).is_none() {
                    let mut pool = app.clone();
                    pool.name = POOL.to_string();
                    pool.backends = (0..KEYS).map(|k| BackendSpec::new(marker(k))).collect();
                    missing.push(pool);
                }
                if !pools.iter().any(|p| p.name == set::POOL) {
                    let mut pool = app.clone();
                    pool.name = set::POOL.to_string();
                    pool.sticky = None;
                    pool.backends = vec![BackendSpec::new(SocketAddr::new(
                        Ipv4Addr::new(198, 19, 0, 2).into(),
                        9,
                    ))];
                    missing.push(pool);
                }
                if missing.is_empty() {
                    return Ok(());
                }
                for pool in missing {
                    if let Err(e) = admin.write(&Command::AddPool(pool)).await {
                        last = e.message().to_string();
                    }
                }
            }
            Err(e) => last = e.message().to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!("the loop returns")
}

/// Next values to write, per key: unique while under the weight limit.
#[derive(Debug, Default)]
pub struct Values([AtomicU64; KEYS as usize]);

impl Values {
    fn next(&self, key: u32) -> u64 {
        let n = self.0[key as usize].fetch_add(1, Ordering::Relaxed);
        // 2..MAX_WEIGHT: never the initial 1, nor the final write's value.
        2 + n % (u64::from(BackendSpec::MAX_WEIGHT) - 2)
    }
}

/// One write of `value` to `key` through `admin` as `process`, recorded;
/// how it ended.
async fn write(
    history: &History,
    admin: &mut Admin,
    process: &str,
    node: usize,
    key: u32,
    value: u64,
) -> Kind {
    let op = |kind| {
        Op::new(process, kind, "write", history.now())
            .key(key)
            .value(Some(value))
            .node(node)
    };
    let command = Command::SetWeight {
        pool: POOL.to_string(),
        address: marker(key),
        weight: u32::try_from(value).unwrap_or(u32::MAX),
    };
    write_recorded(history, admin, &command, op).await
}

/// Sends `command` through `admin`, recording `op`'s invocation and its
/// end, which it returns: `ok` once applied, `fail` if the state machine
/// refused it, `info` if unanswered or refused by the node (it may still
/// commit).
pub(crate) async fn write_recorded(
    history: &History,
    admin: &mut Admin,
    command: &Command,
    op: impl Fn(Kind) -> Op,
) -> Kind {
    history.record(op(Kind::Invoke));
    let end = match tokio::time::timeout(CALL_TIMEOUT * 2, admin.write(command)).await {
        Ok(Ok(written)) if written.applied => op(Kind::Ok),
        Ok(Ok(_)) => op(Kind::Fail).error("rejected by the state machine"),
        Ok(Err(status)) => op(Kind::Info).error(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => op(Kind::Info).error("no answer"),
    };
    let kind = end.kind;
    history.record(end);
    kind
}

/// One linearizable read of `key` through `admin` as `process`, recorded.
async fn read(history: &History, admin: &mut Admin, process: &str, node: usize, key: u32) -> Option<u64> {
    let op = |kind| Op::new(process, kind, "read", history.now()).key(key).node(node);
    history.record(op(Kind::Invoke));
    match tokio::time::timeout(CALL_TIMEOUT * 2, admin.read(false)).await {
        Ok(Ok((state, _))) => match weight(&state, key) {
            Some(value) => {
                history.record(op(Kind::Ok).value(Some(value)));
                Some(value)
            }
            None => {
                history.record(op(Kind::Fail).error("no such key in the state"));
                None
            }
        },
        Ok(Err(status)) => {
            history.record(op(Kind::Fail).error(format!("{:?}: {}", status.code(), status.message())));
            None
        }
        Err(_) => {
            history.record(op(Kind::Fail).error("no answer"));
            None
        }
    }
}

/// W1: `processes` clients (client i talks to node i mod 3) reading and
/// writing random keys until `until`.
pub async fn registers(
    history: History,
    nodes: Vec<Ipv4Addr>,
    processes: usize,
    until: Instant,
    mut rng: Rng,
) {
    let values = Arc::new(Values::default());
    let mut clients = tokio::task::JoinSet::new();
    for slot in 0..processes {
        let (history, values, mut rng) = (history.clone(), Arc::clone(&values), rng.fork(slot as u64));
        let node = slot % nodes.len();
        let mut admin = admin(nodes[node]);
        clients.spawn(async move {
            let mut process = slot;
            loop {
                tokio::time::sleep(rng.millis(20, 100)).await;
                if Instant::now() >= until {
                    break;
                }
                let key = u32::try_from(rng.below(u64::from(KEYS))).unwrap_or(0);
                let name = format!("w{process}");
                if rng.percent(50) {
                    let value = values.next(key);
                    if write(&history, &mut admin, &name, node, key, value).await == Kind::Info {
                        process += processes;
                    }
                } else {
                    read(&history, &mut admin, &name, node, key).await;
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
}

/// What the cluster looked like after the heal (C7).
#[derive(Debug, Clone, Default)]
pub struct Healed {
    /// The one leader every node named (0-based).
    pub leader: Option<usize>,
    /// The final write's value, if acknowledged, and what the final read returned.
    pub final_write: Option<u64>,
    pub final_read: Option<u64>,
    /// The applied index every node reached with the same state.
    pub converged: Option<u64>,
    /// What did not happen, if anything.
    pub problems: Vec<String>,
}

/// C7: waits (each step within `deadline`) for one leader named by every
/// node, writes and reads key 0 once more (recorded as process `final`),
/// and waits until every node has applied the same index to the same state.
pub async fn after_heal(history: History, nodes: Vec<Ipv4Addr>, deadline: Duration) -> Healed {
    let mut healed = Healed::default();
    let mut admins: Vec<Admin> = nodes.iter().map(|n| admin(*n)).collect();
    let start = Instant::now();
    while healed.leader.is_none() && start.elapsed() < deadline {
        let mut seen = Vec::new();
        for admin in &mut admins {
            seen.push(admin.status().await.ok().map(|s| s.leader_id));
        }
        if let Some(Some(first)) = seen.first()
            && *first != 0
            && seen.iter().all(|s| *s == Some(*first))
        {
            healed.leader = usize::try_from(*first - 1).ok();
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let Some(leader) = healed.leader else {
        healed
            .problems
            .push(format!("no leader named by every node within {deadline:?}"));
        return healed;
    };
    let value = u64::from(BackendSpec::MAX_WEIGHT); // no client writes it
    let start = Instant::now();
    for attempt in 0.. {
        let name = format!("final{attempt}");
        if write(&history, &mut admins[leader], &name, leader, 0, value).await == Kind::Ok {
            healed.final_write = Some(value);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if start.elapsed() > deadline {
            healed.problems.push(format!(
                "the final write was not acknowledged within {deadline:?}"
            ));
            return healed;
        }
    }
    let other = (leader + 1) % nodes.len();
    healed.final_read = read(&history, &mut admins[other], "final-read", other, 0).await;
    if healed.final_read.is_none() {
        healed
            .problems
            .push("the final linearizable read failed".to_string());
    }
    let start = Instant::now();
    while start.elapsed() < deadline {
        let mut states = Vec::new();
        for admin in &mut admins {
            states.push(admin.read(true).await.ok());
        }
        if let Some(Some((first, index))) = states.first()
            && states
                .iter()
                .all(|s| s.as_ref() == Some(&(first.clone(), *index)))
        {
            healed.converged = Some(*index);
            return healed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    healed.problems.push(format!(
        "the nodes did not converge on one applied state within {deadline:?}"
    ));
    healed
}

/// W4: requests through the VIP that started at `since` or later (not
/// those before the VIP first answered) as history: process `process`
/// (`vip`, the site's impatient client, or `patient`), `get` (through the
/// `http` listener) or `tcp` (HTTP through the `tcp` listener), the
/// request's `X-Request-Id` as its value, a failure's outcome as its error.
pub fn vip_ops(history: &History, attempts: &[Attempt], since: Instant, process: &str) -> Vec<Op> {
    attempts
        .iter()
        .filter(|a| a.start >= since)
        .flat_map(|a| {
            let id = Some(a.id);
            let end = if a.ok { Kind::Ok } else { Kind::Fail };
            let f = if a.port == 9000 { "tcp" } else { "get" };
            let done = Op::new(process, end, f, history.ns(a.end)).value(id);
            [
                Op::new(process, Kind::Invoke, f, history.ns(a.start)).value(id),
                if a.ok { done } else { done.error(a.outcome.clone()) },
            ]
        })
        .collect()
}
