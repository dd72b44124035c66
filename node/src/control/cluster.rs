//! One node's control plane from start to stop: claim the data dir, open the
//! log and state machine, start openraft, serve the Raft and admin gRPC
//! services, form the cluster on first start (exactly once: openraft refuses
//! a second `initialize`), seed the replicated state from the file, and warn
//! when the file and the cluster state have drifted apart.

use super::admin_service::{AdminService, Handover, QuorumView};
use super::auth::{Credentials, RequireCredentials};
use super::data_dir::{self, DataDirError};
use super::leadership::{self, Leadership};
use super::log_store::{LogStore, OpenError};
use super::network::{MAX_MESSAGE_BYTES, Network};
use super::proposer::Proposer;
use super::raft_service::RaftService;
use super::spread::SharedLeases;
use super::state_machine::{Applied, StateMachine};
use super::sticky_admin::StickyAdmin;
use super::types::{Node, NodeId, Raft};
use crate::sticky::metrics::StickyMetrics;
use raftlb_config::{
    ClusterSpec, ClusterState, Command, Config, RaftTiming, Role, StickyTables, TokenSource,
};
use raftlb_proto::admin::admin_server::{Admin, AdminServer};
use raftlb_proto::admin::{ReadRequest, WriteRequest};
use raftlb_proto::raft::raft_server::RaftServer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot read the cluster token file {path}: {source}")]
    TokenFile { path: String, source: std::io::Error },
    #[error("the cluster token file {path} is empty")]
    EmptyToken { path: String },
    #[error("[cluster]: {0}")]
    Credentials(String),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("invalid Raft settings: {0}")]
    RaftConfig(String),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error("cannot serve Raft and admin gRPC on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Raft settings. The tick that checks election timers runs every 1.5
/// heartbeats, so election timing is only as fine as the heartbeat.
fn raft_config(cluster: &str, timing: RaftTiming) -> Result<openraft::Config, ControlError> {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let election = millis(timing.election_timeout);
    openraft::Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: millis(timing.heartbeat_interval),
        election_timeout_min: election,
        election_timeout_max: election.saturating_mul(2),
        install_snapshot_timeout: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1000,
        purge_batch_size: 256,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ControlError::RaftConfig(e.to_string()))
}

/// The longest a stopping leader spends handing leadership over.
const HAND_OVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A running control plane.
pub struct ControlPlane {
    pub raft: Raft,
    /// Every applied change, for the data plane and local reads.
    pub applied: watch::Receiver<Arc<Applied>>,
    /// What this node knew committed when it started: the data plane
    /// serves no older state (a restart replays its log up to here first).
    pub committed_at_start: u64,
    /// Where the data plane proposes changes.
    pub proposer: Proposer,
    /// The committed sticky sessions, read in place by the data plane.
    pub sticky_tables: Arc<StickyTables>,
    /// What the sticky tables report (`ctl sticky stats`).
    pub sticky_metrics: Arc<StickyMetrics>,
    proposing: JoinHandle<()>,
    /// This node's standing, confirmed every heartbeat (the VIP lease).
    pub leadership: watch::Receiver<Leadership>,
    leading: JoinHandle<()>,
    /// The admin service, for what the VIP manager asks of the leader.
    pub admin: AdminService,
    /// Spread-VIP leases granted while this node leads.
    pub leases: SharedLeases,
    drain: CancellationToken,
    /// Where the VIP manager says which VIPs this node holds (`ctl status`).
    pub vips_held: watch::Sender<Vec<String>>,
    stop_server: CancellationToken,
    server: Option<JoinHandle<()>>,
    seeding: JoinHandle<()>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts the node's Raft. `config_path` is only for the drift warning.
    pub async fn start(config: &Config, config_path: &Path) -> Result<ControlPlane, ControlError> {
        let me = config.node.id;
        let membership = &config.membership;
        let credentials = Credentials::new(&membership.cluster_id, &read_token(&membership.token)?)
            .map_err(ControlError::Credentials)?;
        let dir = Path::new(&config.node.data_dir);
        data_dir::claim(dir, &membership.cluster_id, me)?;
        let log_store = LogStore::open(&dir.join("raft"))?;
        let committed_at_start = log_store.committed_index();
        let sticky_metrics = Arc::new(StickyMetrics::default());
        let (state_machine, applied) = StateMachine::open(dir, Arc::clone(&sticky_metrics))?;
        let sticky_tables = state_machine.sticky_tables();
        let sticky_admin = StickyAdmin {
            machine: state_machine.clone(),
            metrics: Arc::clone(&sticky_metrics),
        };
        let raft = Raft::new(
            me,
            Arc::new(raft_config(&membership.cluster_id, membership.timing)?),
            Network::new(me, credentials.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ControlError::Raft(e.to_string()))?;

        let stop_server = CancellationToken::new();
        let standing_down = Arc::new(AtomicBool::new(false));
        let (leadership, leading) =
            leadership::watch(raft.clone(), membership.timing, Arc::clone(&standing_down));
        let drain = CancellationToken::new();
        let vips_held = watch::Sender::new(Vec::new());
        let leases = SharedLeases::default();
        let admin = AdminService::new(
            me,
            raft.clone(),
            applied.clone(),
            credentials.clone(),
            QuorumView {
                leadership: leadership.clone(),
                timing: membership.timing,
                started: std::time::Instant::now(),
                vips: vips_held.subscribe(),
            },
            Handover {
                standing_down,
                witness: config.node.role == Role::Witness,
                drain: drain.clone(),
                leases: leases.clone(),
            },
            sticky_admin,
        );
        let server = match membership.raft {
            Some(address) => {
                let raft_service = RaftService::new(raft.clone(), leadership.clone(), membership.timing);
                Some(
                    serve(
                        address,
                        raft_service,
                        admin.clone(),
                        &credentials,
                        stop_server.clone(),
                    )
                    .await?,
                )
            }
            None => None,
        };
        if config.node.role == Role::Witness {
            // A witness votes but never stands, and leaves forming the
            // cluster (which starts an election) to the balancers: the
            // leader, which owns the VIPs, is always a balancer.
            raft.runtime_config().elect(false);
        } else {
            form_cluster(&raft, me, membership.raft, &membership.peers).await;
        }
        let (proposer, proposing) = Proposer::start(admin.clone());
        let admin_for_handover = admin.clone();
        let seeding = tokio::spawn(seed(
            admin,
            applied.clone(),
            config.cluster.clone(),
            hint(membership.raft, config_path),
        ));
        Ok(ControlPlane {
            raft,
            applied,
            committed_at_start,
            proposer,
            sticky_tables,
            sticky_metrics,
            proposing,
            leadership,
            leading,
            admin: admin_for_handover,
            leases,
            drain,
            vips_held,
            stop_server,
            server,
            seeding,
        })
    }

    /// Completes if Raft stops on its own: a storage error (disk full, I/O
    /// failure) is fatal to openraft, and a node that can no longer persist
    /// must not keep acknowledging. Returns the reason.
    pub async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "Raft stopped".to_string();
            }
        }
    }

    /// Completes when an operator asks this node to drain (`raftlb ctl node drain`).
    pub async fn drain_requested(&self) {
        self.drain.cancelled().await;
    }

    /// If this node leads, hands leadership (and so the VIPs) to another
    /// voter before it stops; says what happened.
    pub async fn hand_over_if_leader(&self) {
        if self.raft.metrics().borrow().state != openraft::ServerState::Leader {
            return;
        }
        match tokio::time::timeout(HAND_OVER_TIMEOUT, self.admin.hand_over(None)).await {
            Ok(Ok(leader)) => tracing::info!(leader, "leadership handed over"),
            Ok(Err(Ok(_))) => {}
            Ok(Err(Err(status))) => tracing::warn!(reason = status.message(), "leadership not handed over"),
            Err(_) => tracing::warn!("leadership not handed over within {HAND_OVER_TIMEOUT:?}"),
        }
    }

    /// Stops Raft and the gRPC server.
    pub async fn stop(mut self) {
        self.seeding.abort();
        self.proposing.abort();
        self.leading.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not shut down cleanly");
        }
        self.stop_server.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

fn read_token(source: &TokenSource) -> Result<String, ControlError> {
    match source {
        TokenSource::None => Ok(String::new()),
        TokenSource::Inline(token) => Ok(token.clone()),
        TokenSource::File(path) => {
            let token = std::fs::read_to_string(path).map_err(|source| ControlError::TokenFile {
                path: path.clone(),
                source,
            })?;
            if token.trim().is_empty() {
                return Err(ControlError::EmptyToken { path: path.clone() });
            }
            Ok(token.trim().to_string())
        }
    }
}

/// Binds first (so a taken port is a clear start error), then serves both
/// services behind the credentials check until `stop`.
async fn serve(
    address: SocketAddr,
    raft_service: RaftService,
    admin: AdminService,
    credentials: &Credentials,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, ControlError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ControlError::Bind { address, source })?;
    let check = RequireCredentials(credentials.clone());
    let raft_service = RaftServer::new(raft_service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin_service = AdminServer::new(admin).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            raft_service,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            admin_service,
            check,
        ));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(%address, "serving Raft and the admin API");
    Ok(tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled())
            .await
        {
            tracing::error!(%address, error = %e, "gRPC server stopped");
        }
    }))
}

/// First start of an initial voter: propose the initial membership. Every
/// initial voter does this with the same member list, which openraft
/// accepts; on any later start the log is not empty and nothing happens.
async fn form_cluster(
    raft: &Raft,
    me: NodeId,
    address: Option<SocketAddr>,
    peers: &BTreeMap<u64, SocketAddr>,
) {
    match raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "Raft stopped before the cluster formed");
            return;
        }
    }
    let members: BTreeMap<NodeId, Node> = if peers.is_empty() {
        let address = address.map(|a| a.to_string()).unwrap_or_default();
        BTreeMap::from([(me, Node::new(address))])
    } else if peers.contains_key(&me) {
        peers
            .iter()
            .map(|(id, a)| (*id, Node::new(a.to_string())))
            .collect()
    } else {
        tracing::info!(
            "not an initial voter: waiting to be added (raftlb ctl member add {me} {})",
            address.map(|a| a.to_string()).unwrap_or_default()
        );
        return;
    };
    let voters = members.len();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(voters, "formed the cluster"),
        Err(e) => tracing::debug!(error = %e, "initialize declined (already formed)"),
    }
}

fn hint(address: Option<SocketAddr>, config_path: &Path) -> String {
    let node = address.map(|a| format!(" --node {a}")).unwrap_or_default();
    format!("raftlb ctl{node} apply --config {}", config_path.display())
}

/// Seeds a new cluster with the file's listeners and pools (the first
/// node to get its `Bootstrap` committed wins; the others are refused),
/// then compares the file with the cluster state and warns if they differ.
async fn seed(
    admin: AdminService,
    mut applied: watch::Receiver<Arc<Applied>>,
    file: ClusterSpec,
    hint: String,
) {
    let mut waiting_logged = false;
    while !applied.borrow().state.is_bootstrapped() {
        if file.listeners.is_empty() && file.pools.is_empty() {
            break;
        }
        // The cookie secret rides with the seed, so `cookie` sessions work
        // from the first request.
        let mut seed = vec![Command::Bootstrap(file.clone())];
        seed.extend(crate::sticky::upkeep::draw_secret().map(Command::SetStickySecret));
        let command = match postcard::to_allocvec(&Command::Independent(seed)) {
            Ok(command) => command,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the bootstrap command");
                return;
            }
        };
        match admin.write(tonic::Request::new(WriteRequest { command })).await {
            Ok(reply) if reply.get_ref().applied => {
                tracing::info!(
                    index = reply.get_ref().log_index,
                    "seeded the cluster from the config file"
                );
                return;
            }
            Ok(_) => {}
            Err(status) if !waiting_logged => {
                waiting_logged = true;
                tracing::info!(
                    reason = status.message(),
                    "waiting for a quorum to seed the cluster"
                );
            }
            Err(_) => {}
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), applied.changed()).await;
    }
    // Bootstrapped by someone else (or earlier): say if our file disagrees
    // with the cluster's current state, read linearizably (a restarted node's
    // own applied state may still be behind).
    let state: ClusterState = loop {
        let read = admin
            .read(tonic::Request::new(ReadRequest { stale: false }))
            .await;
        if let Ok(reply) = read
            && let Ok(state) = postcard::from_bytes::<ClusterState>(&reply.get_ref().state)
            && state.is_bootstrapped()
        {
            break state;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), applied.changed()).await;
    };
    let changes = raftlb_config::diff::diff(state.spec(), &file);
    if !changes.is_empty() {
        let listed: Vec<String> = changes.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "the config file differs from the cluster state in {} ways ({}); serving the cluster state. To make the cluster match the file: {hint}",
            changes.len(),
            listed.join("; ")
        );
    }
}
