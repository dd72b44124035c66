//! Assembles one node: configuration → control plane (Raft) → every applied
//! state becomes a new cluster view and listener set for the data plane;
//! then waits for the stop signal (or a successor, [`upgrade`](crate::upgrade))
//! and drains.

use crate::control::data_dir::{self, DirLock};
use crate::control::{ControlError, ControlPlane};
use crate::dataplane::{DataPlane, StartError};
use crate::health::{self, checker::Checkers};
use crate::readiness::Readiness;
use crate::reload::{self, Reloader};
use crate::sticky::{self, Sticky};
use crate::systemd::Notifier;
use crate::upgrade::sockets::{Key, Kind, Registration};
use crate::upgrade::{self, Door, Pending, Successor, UpgradeError, Visitor};
use crate::view::{ClusterView, SharedView};
use crate::vip::{VipError, VipManager};
use arc_swap::ArcSwap;
use raftlb_config::{ClusterState, Config, ListenerSpec, Role};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

pub use crate::reload::{LoadError, load_config};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    DataPlane(#[from] StartError),
    #[error(transparent)]
    Vip(#[from] VipError),
    #[error("Raft stopped, so this node stopped too: {0}")]
    RaftFailed(String),
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    Failpoints(String),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error(transparent)]
    AccessLog(#[from] crate::access_log::OpenError),
    #[error("cannot serve /metrics on {address}: {source}")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the disk holding {data_dir} is full, so this node stopped rather than acknowledge what it \
         cannot persist ({reason}); free space and restart it: it catches up from the cluster"
    )]
    DiskFull { data_dir: String, reason: String },
}

/// Runs a node until `stop` completes: the control plane (Raft), and the
/// data plane on `workers` threads following every applied state; then
/// drains in-flight work for up to the node's drain timeout. With
/// `upgrade`, it first takes the sockets, the data dir's lock and then the
/// log of the process serving the data dir, which then drains and exits
/// (see [`upgrade`](crate::upgrade)); a running node hands itself over
/// so to a successor that asks. SIGHUP, or `raftlb reload` through the same
/// socket, reads the config file again ([`reload`](crate::reload)).
pub async fn run(
    config: Config,
    config_path: &Path,
    workers: usize,
    stop: impl Future<Output = ()>,
    upgrade: bool,
) -> Result<(), RunError> {
    crate::failpoint::init().map_err(RunError::Failpoints)?;
    let sigusr2 = upgrade::spawn_on_sigusr2();
    crate::access_log::start(config.node.access_log.as_ref(), config_path)?;
    let sigusr1 = crate::access_log::reopen_on_sigusr1();
    let hangup = reload::watch_sighup();
    let open_files = crate::descriptors::raise_limit();
    let certificates = crate::tls::seed::read(&config.certificate_files).map_err(RunError::Certificate)?;
    let data_dir = config.node.data_dir.clone();
    let node = config.node.id;
    let cluster_id = config.membership.cluster_id.clone();
    // Certificates that would fail the start fail it before anything
    // touches the data dir (its lock file included), and while a running
    // predecessor still has its Raft.
    crate::control::cluster::links(&config)?;
    let mut successor = match upgrade {
        true => Some(Successor::connect(&data_dir, &cluster_id, node).await?),
        false => None,
    };
    let _lock = hold_lock(&data_dir)?;
    if let Some(successor) = successor.as_mut() {
        // What would fail the start once the log is released fails now,
        // while the running process still has its Raft.
        data_dir::claim(Path::new(&data_dir), &cluster_id, node).map_err(ControlError::from)?;
        successor.wait_released().await?;
    }
    let notifier = Notifier::from_env();
    let control = ControlPlane::start(&config, config_path).await?;
    let reloader = Arc::new(Reloader::new(config.clone(), control.writer()));
    let hangups = reload::spawn_on_sighup(hangup, Arc::clone(&reloader), config_path.to_path_buf());
    let storing = crate::tls::seed::start(&control, certificates);
    let witness = config.node.role == Role::Witness;
    let vips = match config.vips.is_empty() {
        true => None,
        false => Some(VipManager::start(
            &control,
            config.node.id,
            &config.vips,
            config.membership.timing,
            config.membership.vip_on_quorum_loss,
        )?),
    };
    let sticky = Sticky::new(&control);
    let upkeep = sticky::upkeep::start(&control);
    let view: SharedView = Arc::new(ArcSwap::from_pointee(ClusterView::default()));
    // What this node routes by, for the status page of any member (`Observe`).
    control.observatory().attach(&view);
    let (readiness, readiness_seen) = crate::readiness::channel();
    let watchdog = notifier
        .watchdog_interval(upgrade)
        .map(|interval| notifier.spawn_watchdog(interval, control.raft().clone()));
    let metrics = match config.node.metrics {
        Some(address) => Some(
            crate::metrics::serve(
                address,
                &control,
                config.membership.timing,
                Arc::clone(&view),
                readiness_seen,
            )
            .await
            .map_err(|source| RunError::Metrics { address, source })?,
        ),
        None => None,
    };
    let mut dataplane = match witness {
        true => None,
        false => Some(DataPlane::start(
            Arc::clone(&view),
            workers,
            crate::descriptors::data_plane_share(open_files),
        )?),
    };
    // A witness forwards nothing, so it checks nothing.
    let checkers = (!witness).then(|| Checkers::start(&control, node));
    // Every balancer answers the GSLB zone; the leader checks its sites.
    let gslb = (!witness).then(|| crate::gslb::start(&control, &config.node, workers));
    let mut gslb_settled = gslb.as_ref().map(|g| g.settled.clone());
    let health_upkeep = health::upkeep::start(Arc::clone(&view));
    let mut applied = control.applied();
    let (serving, mut served_all) = watch::channel(false);
    let follow = async {
        let mut ready = false;
        let mut served: Option<ClusterState> = None;
        loop {
            let current = Arc::clone(&applied.borrow_and_update());
            // A restart serves nothing older than what it knew committed
            // (a backend it had seen fail, say) while it replays its log.
            let index = current.last_applied.map_or(0, |id| id.index);
            let current_enough = ready || index >= control.committed_at_start();
            // Entries that change nothing here (membership, refused commands)
            // leave the view, and the balancers' positions, as they are.
            if current_enough && current.state.is_bootstrapped() && served.as_ref() != Some(&current.state) {
                served = Some(current.state.clone());
                let spec = current.state.spec();
                view.store(Arc::new(ClusterView::build(
                    &current.state,
                    node,
                    Some(&sticky),
                    Some(&view.load()),
                )));
                if let Some(checkers) = &checkers {
                    checkers.follow(&view.load());
                }
                let local: Vec<ListenerSpec> = spec
                    .listeners
                    .iter()
                    .map(|l| {
                        let mut local = ListenerSpec {
                            bind: config.node.local_bind(l.bind),
                            ..l.clone()
                        };
                        local.quic.http3_bind = l.quic.http3_bind.map(|b| config.node.local_bind(b));
                        local
                    })
                    .collect();
                if let Some(dataplane) = dataplane.as_mut() {
                    for error in dataplane.reconcile(&local).await {
                        tracing::error!(error = %error, "listener not served");
                    }
                }
                if !ready {
                    ready = true;
                    let listeners = if witness { 0 } else { spec.listeners.len() };
                    tracing::info!(node, witness, listeners, index, "raftlb node ready");
                    serving.send_replace(true);
                } else {
                    tracing::debug!(index, "data plane follows the new state");
                }
            }
            if applied.changed().await.is_err() {
                // The state machine is gone: Raft has stopped.
                std::future::pending::<()>().await;
            }
        }
    };
    // Ready once every listener is served and the cluster joined.
    let mut listeners_served = served_all.clone();
    let joining = async {
        let _ = listeners_served.wait_for(|served| *served).await;
        let announce = |stage: Readiness| {
            readiness.send_replace(stage);
            notifier.notify(&format!("STATUS={}", stage.describe()));
        };
        announce(Readiness::Joining { target: None });
        control
            .catch_up(|target| announce(Readiness::Joining { target: Some(target) }))
            .await;
        readiness.send_replace(Readiness::Ready);
        // A successor is the service's main process from now on.
        let main_pid = match upgrade {
            true => format!("MAINPID={}\n", std::process::id()),
            false => String::new(),
        };
        notifier.notify(&format!("{main_pid}READY=1\nSTATUS=ready"));
        tracing::info!("joined the cluster: ready");
        std::future::pending::<Exit>().await
    };
    // Once every listener is served: a predecessor stops accepting, and
    // successors may ask to take over.
    let successors = async {
        let _ = served_all.wait_for(|served| *served).await;
        let door = Door::open(&data_dir, &cluster_id, node);
        if let Some(successor) = successor {
            match successor.serving().await {
                Ok(()) => tracing::info!("serving every listener: the previous process stops accepting"),
                Err(e) => {
                    tracing::warn!(error = %e, "the previous process did not hear that this one serves")
                }
            }
            // The DNS server takes its inherited sockets once it has
            // caught up with the state; not before it may they be closed.
            if let Some(settled) = gslb_settled.as_mut() {
                let _ = tokio::time::timeout(GSLB_SETTLE, settled.wait_for(|s| *s)).await;
            }
            for key in upgrade::sockets::close_unclaimed() {
                tracing::info!(socket = %key, "an inherited socket is not in the configuration: closed");
            }
        }
        match door {
            Ok(door) => loop {
                match door.next().await {
                    Visitor::Successor(pending) => break (door, pending),
                    Visitor::Reload(request) => {
                        reload::spawn_request(request, Arc::clone(&reloader));
                    }
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "in-place upgrades of this process are not possible");
                std::future::pending().await
            }
        }
    };
    tokio::pin!(stop);
    let exit = tokio::select! {
        () = &mut stop => Exit::Stop,
        () = control.drain_requested() => Exit::Stop,
        () = follow => Exit::Stop,
        reason = control.failed() => Exit::Failed(reason),
        (door, pending) = successors => Exit::Upgrade(door, pending),
        exit = joining => exit,
    };
    readiness.send_replace(Readiness::Draining);
    // Raft stops (or moves to the successor) from here: no more pings.
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if !matches!(exit, Exit::Upgrade(..)) {
        notifier.notify(&format!("STOPPING=1\nSTATUS={}", Readiness::Draining.describe()));
    }
    // Nothing proposes any more: a stopping node's verdicts and expiries
    // would die with it, and after a handover its Raft is gone.
    upkeep.abort();
    storing.abort();
    hangups.abort();
    drop(checkers);
    if let Some(gslb) = &gslb {
        gslb.checks.abort();
    }
    let mut vips = vips;
    let mut control = Some(control);
    let (failure, upgraded) = match exit {
        Exit::Failed(reason) => {
            tracing::error!(%reason, "Raft stopped: no further change can be persisted");
            (Some(reason), false)
        }
        // A planned stop: leadership, and with it the VIPs, move first.
        Exit::Stop => {
            if let Some(control) = &control {
                control.hand_over_if_leader().await;
            }
            (None, false)
        }
        Exit::Upgrade(door, pending) => {
            let upgraded = hand_over(&data_dir, &door, pending, &mut control, vips.take(), &mut stop).await;
            (None, upgraded)
        }
    };
    // The VIPs move first, so new clients reach another node while this
    // one drains the connections it has.
    if let Some(vips) = vips {
        vips.stop().await;
    }
    tracing::info!(timeout = ?config.node.drain_timeout, "stopping: no new connections, draining");
    let open = match dataplane {
        Some(dataplane) => dataplane.drain(config.node.drain_timeout).await,
        None => 0,
    };
    if open > 0 {
        tracing::warn!(open, "drain timeout reached; closing the remaining connections");
    } else {
        tracing::info!("drained");
    }
    // DNS is answered from the last state until here: through a handover
    // both processes answer on the same sockets.
    if let Some(gslb) = &gslb {
        gslb.server.abort();
    }
    health_upkeep.abort();
    sigusr2.abort();
    sigusr1.abort();
    crate::access_log::flush(std::time::Duration::from_secs(1));
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Some(control) = control {
        control.stop().await;
    }
    match failure {
        Some(reason) if reason.contains("StorageFull") || reason.contains("No space left") => {
            Err(RunError::DiskFull {
                data_dir: config.node.data_dir.clone(),
                reason,
            })
        }
        Some(reason) => Err(RunError::RaftFailed(reason)),
        None if upgraded => {
            tracing::info!("handed over to the new process; bye");
            Ok(())
        }
        None => {
            tracing::info!("stopped; bye");
            Ok(())
        }
    }
}

/// What a reload request hears while this process hands itself over.
const NO_RELOAD_WHILE_HANDING_OVER: &str = "this process is handing the node over to a new one and has no Raft to reload with; reload once the new one serves";

/// Why the node's main wait ended.
enum Exit {
    Stop,
    Failed(String),
    Upgrade(Door, Pending),
}

/// How long a successor waits for its DNS server to take the inherited
/// DNS sockets before closing the ones nobody took.
const GSLB_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the data dir's lock (the predecessor's after an in-place upgrade)
/// and registers it for a successor.
fn hold_lock(data_dir: &str) -> Result<(DirLock, Registration), RunError> {
    let path = Path::new(data_dir);
    let key = Key::unaddressed(Kind::Lock);
    let lock = match upgrade::sockets::take(key) {
        Some(fd) => DirLock::adopt(path, fd),
        None => data_dir::lock(path),
    }
    .map_err(ControlError::from)?;
    let registration = upgrade::sockets::register(key, lock.as_fd()).map_err(|source| {
        ControlError::DataDir(data_dir::DataDirError::Io {
            path: path.to_path_buf(),
            source,
        })
    })?;
    Ok((lock, registration))
}

/// The running process's side of an in-place upgrade, once a successor
/// holds every socket: leadership and VIPs go, Raft stops and closes its
/// log, the successor takes the log. Returns whether the successor serves
/// (this process then drains and exits). If it fails, this one serves on
/// from its last view, without Raft, and starts a copy of its own binary
/// to take over with Raft (once; after that, until `stop` or the next
/// successor an operator starts).
async fn hand_over(
    data_dir: &str,
    door: &Door,
    mut pending: Pending,
    control: &mut Option<ControlPlane>,
    vips: Option<VipManager>,
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tracing::info!(pid = pending.pid(), "handing this node over to a new process");
    if let Some(control) = control.as_ref() {
        control.hand_over_if_leader().await;
    }
    if let Some(vips) = vips {
        vips.stop().await;
    }
    if let Some(control) = control.take() {
        control.stop().await;
    }
    let mut restarted = false;
    loop {
        if let Err(reason) = upgrade::wait_log_released(data_dir).await {
            tracing::error!(%reason, "the log is not released; the new process gives up");
            pending.refuse(&reason).await;
        } else {
            let pid = pending.pid();
            let released = tokio::select! {
                released = pending.release() => released,
                // Stop anyway: the new process serves once it is ready.
                () = stop.as_mut() => return false,
            };
            match released {
                Ok(()) => return true,
                Err(e) if !restarted => {
                    tracing::error!(
                        pid,
                        error = %e,
                        "the new process failed before it served; this one serves on from its last \
                         view and starts a copy of its own binary to take over with Raft"
                    );
                    restarted = true;
                    upgrade::start_successor(upgrade::Binary::This, "the new process failed");
                }
                Err(e) => tracing::error!(
                    pid,
                    error = %e,
                    "the new process failed before it served; this one serves on from its last view, \
                     without Raft: upgrade again (raftlb run --upgrade, SIGUSR2) or restart"
                ),
            }
        }
        pending = tokio::select! {
            () = stop.as_mut() => return false,
            pending = door.next_successor(NO_RELOAD_WHILE_HANDING_OVER) => pending,
        };
    }
}

/// One data-plane worker per CPU the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// Completes on SIGINT or SIGTERM. The SIGTERM handler is installed when
/// this is called, not when the future is first polled, so a signal that
/// arrives while the caller is still starting up is not fatal. Must be
/// called inside a tokio runtime.
pub fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    async move {
        let mut term = match term {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this node");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}
