//! One node's control plane from start to stop: claim the data dir, open the
//! log and state machine, start openraft, serve the Raft and admin gRPC
//! services behind mutual TLS and the authorization layer, form the
//! cluster on first start (exactly once: openraft refuses a second
//! `initialize`), seed the replicated state from the file, and warn when
//! the file and the cluster state have drifted apart. What the rest of the
//! node needs from it, it gets as narrow handles (the applied state, the
//! proposer, the VIP manager's [`VipControl`]), never the Raft handle.

use super::admin_service::AdminService;
use super::authz::{Authorize, Policy};
use super::data_dir::{self, DataDirError};
use super::election::{Elector, LeaderContact};
use super::gauges::{Gauges, VipCounts};
use super::leader_link::LeaderLink;
use super::leadership::{self, Leadership};
use super::log_migration;
use super::log_store::{LogStore, OpenError};
use super::membership::{self, Membership};
use super::network::Network;
use super::proposer::Proposer;
use super::raft_service::RaftService;
use super::reconcile;
use super::spread::{LeaseDesk, SharedLeases};
use super::stall_watch;
use super::state_machine::{Applied, StateMachine};
use super::status::StatusView;
use super::sticky_admin::StickyAdmin;
use super::transfer::Handover;
use super::transport::{self, Dialer, Links};
use super::types::{self, Metrics, Raft};
use super::versions::{self, Versions};
use super::writer::Writer;
use crate::events::Events;
use crate::pki::{Files, Keyring, Subject};
use crate::status_page::Observatory;
use crate::status_page::access::{Token, TokenError};
use crate::status_page::local::Observer;
use crate::sticky::metrics::StickyMetrics;
use raftlb_config::{Config, LinkSecurity, MembershipSpec, Role, StickyTables};
use raftlb_proto::admin::admin_server::AdminServer;
use raftlb_proto::raft::raft_server::RaftServer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("[cluster.tls] {0}")]
    Certificate(String),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("invalid Raft settings: {0}")]
    RaftConfig(String),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error(transparent)]
    StatusToken(#[from] TokenError),
    #[error("cannot serve Raft and admin gRPC on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The longest a stopping leader spends handing leadership over.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long dialling another node (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest any one gRPC call may run on this node's server (a
/// membership change catching a member up or a snapshot take longest).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS: u32 = 256;

/// What the VIP manager needs of the control plane.
#[derive(Clone, Debug)]
pub struct VipControl {
    /// This node's Raft state, leader and term as openraft reports them.
    pub metrics: watch::Receiver<Metrics>,
    /// This node's standing, confirmed every heartbeat (the VIP lease).
    pub leadership: watch::Receiver<Leadership>,
    /// Where the VIP manager says which VIPs this node holds (`ctl status`).
    pub held_report: watch::Sender<Vec<String>>,
    /// Set while this node, as leader, steps aside.
    pub standing_down: Arc<std::sync::atomic::AtomicBool>,
    /// Spread-VIP leases: asking, granting, assigning.
    pub leases: LeaseDesk,
    /// Where the VIP manager lists its VIPs and counts lease renewals and misses.
    pub counts: Arc<VipCounts>,
}

/// A running control plane.
pub struct ControlPlane {
    raft: Raft,
    applied: watch::Receiver<Arc<Applied>>,
    committed_at_start: u64,
    proposer: Proposer,
    writer: Writer,
    sticky_tables: Arc<StickyTables>,
    sticky_metrics: Arc<StickyMetrics>,
    leadership: watch::Receiver<Leadership>,
    vip_control: VipControl,
    handover: Handover,
    link: LeaderLink,
    keyring: Option<Arc<Keyring>>,
    gauges: Gauges,
    events: Arc<Events>,
    observatory: Observatory,
    /// Background work stopped with the control plane.
    tasks: Vec<JoinHandle<()>>,
    stop_server: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

/// How this node's links are secured, from `[cluster]`: its keyring, read
/// and checked to be this node's own certificate (`raftlb check` too).
pub fn links(config: &Config) -> Result<Links, ControlError> {
    let membership = &config.membership;
    let files = match &membership.links {
        LinkSecurity::Tls(files) => files,
        LinkSecurity::InsecureCleartext | LinkSecurity::Standalone => return Ok(Links::Cleartext),
    };
    let keyring = Keyring::load(Files {
        ca: PathBuf::from(&files.ca_file),
        cert: PathBuf::from(&files.cert_file),
        key: PathBuf::from(&files.key_file),
    })
    .map_err(|e| ControlError::Certificate(e.to_string()))?;
    let identity = keyring.identity();
    let me = config.node.id;
    if identity.cluster != membership.cluster_id || identity.subject != Subject::Node(me) {
        return Err(ControlError::Certificate(format!(
            "{}: it is the certificate of {identity}, but this node is node {me} of cluster \"{}\"; \
             make this node's with `raftlb certs node --id {me}`",
            files.cert_file, membership.cluster_id
        )));
    }
    Ok(Links::Tls(keyring))
}

impl ControlPlane {
    /// Starts the node's Raft. `config_path` is only for the drift warning.
    pub async fn start(config: &Config, config_path: &Path) -> Result<ControlPlane, ControlError> {
        let me = config.node.id;
        let membership = &config.membership;
        let links = links(config)?;
        let status_token = config
            .node
            .status_token_file
            .as_deref()
            .map(Token::read)
            .transpose()?;
        let dir = Path::new(&config.node.data_dir);
        let claimed = data_dir::claim(dir, &membership.cluster_id, me)?;
        log_migration::from_sled(dir, claimed.format)?;
        let log_store = LogStore::open(dir)?;
        let committed_at_start = log_store.committed_index();
        let committed = log_store.committed();
        let sticky_metrics = Arc::new(StickyMetrics::default());
        let (state_machine, applied) = StateMachine::open(dir, Arc::clone(&sticky_metrics))?;
        claimed.upgrade()?;
        log_migration::remove_sled(dir)?;
        let sticky_tables = state_machine.sticky_tables();
        let sticky_admin = StickyAdmin {
            machine: state_machine.clone(),
            metrics: Arc::clone(&sticky_metrics),
        };
        let dialer = Dialer::new(links.clone(), CONNECT_TIMEOUT);
        let versions = Versions::new(me);
        let network = Network::new(
            me,
            dialer.clone(),
            membership.max_message_bytes,
            Arc::clone(&versions),
            applied.clone(),
            membership.timing.vote_lease(),
        );
        let raft = Raft::new(
            me,
            Arc::new(
                types::raft_config(&membership.cluster_id, membership.timing)
                    .map_err(ControlError::RaftConfig)?,
            ),
            network.clone(),
            log_store.clone(),
            state_machine.clone(),
        )
        .await
        .map_err(|e| ControlError::Raft(e.to_string()))?;

        let standing_down = Arc::new(AtomicBool::new(false));
        let contact = LeaderContact::started(membership.timing.vote_lease());
        let campaigning = Arc::new(AtomicBool::new(false));
        let (leadership, leading) = leadership::watch(
            raft.clone(),
            membership.timing,
            Arc::clone(&standing_down),
            contact.clone(),
        );
        let link = LeaderLink::new(raft.clone(), dialer, membership.max_message_bytes);
        let writer = Writer::new(
            me,
            raft.clone(),
            applied.clone(),
            link.clone(),
            Arc::clone(&standing_down),
            Arc::clone(&versions),
        );
        let vips_held = watch::Sender::new(Vec::new());
        let events = Arc::new(Events::default());
        let keyring = match &links {
            Links::Tls(keyring) => Some(Arc::clone(keyring)),
            Links::Cleartext => None,
        };
        let status = StatusView {
            me,
            cluster_id: membership.cluster_id.clone(),
            raft: raft.clone(),
            leadership: leadership.clone(),
            timing: membership.timing,
            started: Instant::now(),
            vips: vips_held.subscribe(),
            versions: Arc::clone(&versions),
            applied: applied.clone(),
        };
        let observer = Observer {
            status: status.clone(),
            events: Arc::clone(&events),
            keyring: keyring.clone(),
            sticky: Arc::clone(&sticky_tables),
            witness: config.node.role == Role::Witness,
            view: Arc::default(),
        };
        let observatory = Observatory::new(me, observer.clone(), link.clone(), status_token);
        let handover = Handover {
            me,
            raft: raft.clone(),
            link: link.clone(),
            timing: membership.timing,
            standing_down: Arc::clone(&standing_down),
            witness: config.node.role == Role::Witness,
            drain: CancellationToken::new(),
            contact: contact.clone(),
            campaigning: Arc::clone(&campaigning),
        };
        let leases = LeaseDesk {
            me,
            raft: raft.clone(),
            leases: SharedLeases::default(),
            leadership: leadership.clone(),
            applied: applied.clone(),
            timing: membership.timing,
            link: link.clone(),
        };
        let admin = AdminService {
            me,
            raft: raft.clone(),
            applied: applied.clone(),
            writer: writer.clone(),
            link: link.clone(),
            membership: Membership {
                raft: raft.clone(),
                link: link.clone(),
                versions: Arc::clone(&versions),
            },
            observer,
            handover: handover.clone(),
            leases: leases.clone(),
            status,
            sticky: sticky_admin,
        };
        let stop_server = CancellationToken::new();
        let server = match membership.raft {
            Some(address) => Some(
                serve(
                    address,
                    links,
                    membership,
                    RaftService::new(
                        raft.clone(),
                        leadership.clone(),
                        membership.timing,
                        Arc::clone(&versions),
                        log_store.clone(),
                        contact.clone(),
                        Arc::clone(&campaigning),
                    ),
                    admin,
                    stop_server.clone(),
                )
                .await?,
            ),
            None => None,
        };
        // A witness votes but never stands, and leaves forming the cluster
        // to the balancers: the leader, which owns the VIPs, is always a
        // balancer.
        let standing = (config.node.role != Role::Witness).then(|| {
            Elector {
                me,
                raft: raft.clone(),
                log: log_store,
                network,
                contact,
                timing: membership.timing,
                campaigning,
                standing_down: Arc::clone(&standing_down),
            }
            .spawn()
        });
        if config.node.role != Role::Witness {
            membership::form_cluster(&raft, me, membership.advertised(), &membership.peers).await;
        }
        let (proposer, proposing) = Proposer::start(writer.clone());
        let raising = tokio::spawn(versions::keep_raised(
            raft.clone(),
            versions,
            writer.clone(),
            applied.clone(),
        ));
        // At start the file is the truth only on a standalone node: a
        // cluster node's file may be older than what others committed.
        let seeding = tokio::spawn(reconcile::seed(
            writer.clone(),
            applied.clone(),
            config.cluster.clone(),
            membership.raft.is_none(),
            reconcile::hint(membership.raft, config_path),
        ));
        let gauges = Gauges::new(committed, proposer.clone(), writer.clone(), state_machine);
        let discovering = tokio::spawn(super::discovery::keep_resolved(
            raft.clone(),
            writer.clone(),
            applied.clone(),
            Arc::clone(&gauges.discovery),
        ));
        let following = crate::events::follow(Arc::clone(&events), raft.metrics(), vips_held.subscribe());
        let mut tasks = vec![leading, proposing, seeding, raising, following, discovering];
        tasks.push(stall_watch::spawn());
        tasks.extend(standing);
        tasks.push(gauges.count_leader_changes(raft.metrics()));
        tasks.extend(keyring.clone().map(crate::pki::watch::start));
        Ok(ControlPlane {
            vip_control: VipControl {
                metrics: raft.metrics(),
                leadership: leadership.clone(),
                held_report: vips_held,
                standing_down,
                leases,
                counts: Arc::clone(&gauges.vip),
            },
            raft,
            applied,
            committed_at_start,
            proposer,
            writer,
            sticky_tables,
            sticky_metrics,
            leadership,
            handover,
            link,
            keyring,
            gauges,
            events,
            observatory,
            tasks,
            stop_server,
            server,
        })
    }

    /// Every applied change, for the data plane and local reads.
    pub fn applied(&self) -> watch::Receiver<Arc<Applied>> {
        self.applied.clone()
    }

    /// What this node knew committed when it started: the data plane
    /// serves no older state (a restart replays its log up to here first).
    pub fn committed_at_start(&self) -> u64 {
        self.committed_at_start
    }

    /// Where the data plane proposes changes.
    pub fn proposer(&self) -> Proposer {
        self.proposer.clone()
    }

    /// Where a reload compares the config file with the replicated state
    /// and commits its differences.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// The committed sticky sessions, read in place by the data plane.
    pub fn sticky_tables(&self) -> Arc<StickyTables> {
        Arc::clone(&self.sticky_tables)
    }

    /// What the sticky tables report (`ctl sticky stats`).
    pub fn sticky_metrics(&self) -> Arc<StickyMetrics> {
        Arc::clone(&self.sticky_metrics)
    }

    /// The Raft handle itself, for tests that drive Raft directly (an
    /// election on demand); the node's own parts take narrow handles.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's Raft state as openraft reports it (read only).
    pub fn raft_metrics(&self) -> watch::Receiver<Metrics> {
        self.raft.metrics()
    }

    /// This node's standing, confirmed every heartbeat (the VIP lease).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// What the VIP manager needs.
    pub fn vip_control(&self) -> VipControl {
        self.vip_control.clone()
    }

    /// What `/metrics` reads of the control plane.
    pub fn gauges(&self) -> Gauges {
        self.gauges.clone()
    }

    /// This node's cluster certificate (none in a cleartext cluster).
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring.clone()
    }

    /// This node's recent events (the status page), where its parts record them.
    pub fn events(&self) -> Arc<Events> {
        Arc::clone(&self.events)
    }

    /// What serves the status page (`/` and `/api/status` on the metrics address).
    pub fn observatory(&self) -> Observatory {
        self.observatory.clone()
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

    /// Completes once this node has applied what the cluster had
    /// committed when it asked ([`catch_up`](super::catch_up)); `target`
    /// hears that index once a leader told it.
    pub async fn catch_up(&self, target: impl FnOnce(u64)) {
        super::catch_up::catch_up(&self.raft, &self.link, self.applied(), target).await
    }

    /// Completes when an operator asks this node to drain (`raftlb ctl node drain`).
    pub async fn drain_requested(&self) {
        self.handover.drain.cancelled().await;
    }

    /// If this node leads, hands leadership (and so the VIPs) to another
    /// voter before it stops; says what happened.
    pub async fn hand_over_if_leader(&self) {
        if self.raft.metrics().borrow().state != openraft::ServerState::Leader {
            return;
        }
        match tokio::time::timeout(HAND_OVER_TIMEOUT, self.handover.hand_over(None)).await {
            Ok(Ok(leader)) => tracing::info!(leader, "leadership handed over"),
            Ok(Err(super::leader_link::Redirect::ToLeader(_))) => {}
            Ok(Err(super::leader_link::Redirect::Failed(status))) => {
                tracing::warn!(reason = status.message(), "leadership not handed over")
            }
            Err(_) => tracing::warn!("leadership not handed over within {HAND_OVER_TIMEOUT:?}"),
        }
    }

    /// Stops Raft and the gRPC server.
    pub async fn stop(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not shut down cleanly");
        }
        self.stop_server.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// Binds first (so a taken port is a clear start error), then serves both
/// services behind the authorization layer until `stop`.
async fn serve(
    address: SocketAddr,
    links: Links,
    membership: &MembershipSpec,
    raft_service: RaftService,
    admin: AdminService,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, ControlError> {
    // The predecessor's listener after an in-place upgrade.
    let (listener, registration) =
        crate::upgrade::sockets::listen_tcp(crate::upgrade::sockets::Kind::Raft, address)
            .map_err(|source| ControlError::Bind { address, source })?;
    let tls = matches!(links, Links::Tls(_));
    let incoming =
        transport::accept(listener, links).map_err(|e| ControlError::Certificate(e.to_string()))?;
    let limit = membership.max_message_bytes;
    let policy = Policy::new(&membership.cluster_id, raft_service.raft().clone());
    let router = tonic::transport::Server::builder()
        .timeout(CALL_TIMEOUT)
        .max_concurrent_streams(Some(MAX_STREAMS))
        .concurrency_limit_per_connection(MAX_STREAMS as usize)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(Authorize::layer(policy))
        .add_service(
            RaftServer::new(raft_service)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            AdminServer::new(admin)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        );
    tracing::info!(%address, tls, "serving Raft and the admin API");
    Ok(tokio::spawn(async move {
        let _registration = registration;
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled())
            .await
        {
            tracing::error!(%address, error = %e, "gRPC server stopped");
        }
    }))
}
