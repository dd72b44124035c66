//! The data plane: runs one worker thread per core,
//! each with its own single-threaded async runtime and its own `SO_REUSEPORT`
//! socket for every TCP listener (HAProxy's and nginx's model: a connection,
//! its backend connection and every task serving them stay on one thread, so
//! a request never crosses threads or takes a lock, but for a sticky pool's
//! shard read lock). An `https` listener's HTTP/3 runs a QUIC endpoint on
//! every worker too, each datagram steered to the worker owning its
//! connection ([`quic`]). UDP listeners are served
//! by the first worker. Listeners come and go as the replicated state
//! changes ([`DataPlane::reconcile`]); routing is read only from the shared
//! [`ClusterView`](crate::view::ClusterView).

pub mod admission;
pub mod l4;
pub mod l7;
pub mod listener;
pub mod proxy_protocol;
pub mod quic;
pub mod splice;
pub mod traffic;
pub mod upstream;

use crate::access_log::TlsInfo;
use crate::upgrade::sockets::Registration;
use crate::view::SharedView;
use raftlb_config::{ListenerSpec, Protocol};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The stop signal and the set of connection tasks a stop waits for.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the node stops accepting.
    pub token: CancellationToken,
    /// Every served connection and session.
    pub tracker: TaskTracker,
    /// Cancelled when the drain's time is up: tunnels close, with a FIN
    /// each way, rather than be dropped with the runtime (a reset).
    pub deadline: CancellationToken,
}

/// A listener that could not be bound, or a worker that could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener \"{listener}\": cannot bind {protocol} {address}: {source}")]
    Bind {
        listener: String,
        protocol: &'static str,
        address: SocketAddr,
        source: io::Error,
    },
    #[error("cannot start data plane worker {index}: {source}")]
    Worker { index: usize, source: io::Error },
}

/// The running workers of one node and the listeners they serve.
#[derive(Debug)]
pub struct DataPlane {
    /// Its `deadline` is the hard stop: workers close their tunnels and
    /// drop what is left.
    shutdown: Shutdown,
    workers: Vec<JoinHandle<()>>,
    /// Each worker's inbox of listeners to start serving.
    inboxes: Vec<mpsc::UnboundedSender<Serve>>,
    running: HashMap<String, Running>,
    /// What `https` listeners pick their certificates from.
    view: SharedView,
    /// Connections and UDP sessions served at once over every listener:
    /// the data plane's share of the open-file limit ([`descriptors`](crate::descriptors)).
    descriptors: Arc<Semaphore>,
}

/// A listener being served, and how to stop it.
#[derive(Debug)]
struct Running {
    spec: ListenerSpec,
    stop: CancellationToken,
    /// Its sockets' places in the upgrade registry, forgotten with it.
    _registrations: Vec<Registration>,
}

/// A listener's socket for one worker, by protocol.
#[derive(Debug)]
enum Bound {
    Http(std::net::TcpListener),
    /// With the listener's TLS configuration, shared by its workers (one
    /// session cache and ticket key, so any worker resumes any session).
    Https(std::net::TcpListener, Arc<rustls::ServerConfig>),
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
    /// An `https` listener's HTTP/3: the worker's socket of the group, its
    /// index in the group, and what the workers share.
    Http3(std::net::UdpSocket, usize, Arc<quic::Http3Config>),
}

/// One worker's share of a listener: its spec, its socket, the connection
/// limits (the listener's, shared by its workers, and the node's), and the
/// listener's own stop signal.
#[derive(Debug)]
struct Serve {
    spec: ListenerSpec,
    socket: Bound,
    limits: Limits,
    shutdown: Shutdown,
}

/// What a new connection takes a permit from: its listener's
/// `max_connections` and the data plane's share of descriptors.
#[derive(Debug, Clone)]
pub struct Limits {
    pub listener: Arc<Semaphore>,
    pub descriptors: Arc<Semaphore>,
}

impl DataPlane {
    /// Starts `workers` threads serving nothing yet; [`reconcile`](Self::reconcile)
    /// gives them listeners. `connections`: most connections and UDP
    /// sessions served at once, over every listener.
    pub fn start(view: SharedView, workers: usize, connections: usize) -> Result<DataPlane, StartError> {
        let workers = workers.max(1);
        let shutdown = Shutdown::default();
        let mut threads = Vec::with_capacity(workers);
        let mut inboxes = Vec::with_capacity(workers);
        let shared_view = Arc::clone(&view);
        for index in 0..workers {
            let (inbox, listeners) = mpsc::unbounded_channel();
            let (view, shutdown) = (Arc::clone(&view), shutdown.clone());
            let thread = std::thread::Builder::new()
                .name(format!("raftlb-worker-{index}"))
                .spawn(move || run_worker(index, listeners, view, shutdown))
                .map_err(|source| StartError::Worker { index, source })?;
            threads.push(thread);
            inboxes.push(inbox);
        }
        Ok(DataPlane {
            shutdown,
            workers: threads,
            inboxes,
            running: HashMap::new(),
            view: shared_view,
            descriptors: Arc::new(Semaphore::new(connections)),
        })
    }

    /// Makes the served listeners match `wanted`: stops the ones that are
    /// gone (their connections finish; HTTP ones after their current
    /// request), starts new ones, and restarts those whose socket settings
    /// changed. A change of pool only needs the new view, not a restart.
    /// Returns the listeners that could not be bound.
    pub async fn reconcile(&mut self, wanted: &[ListenerSpec]) -> Vec<StartError> {
        let mut rebinding = Vec::new();
        self.running.retain(|name, running| {
            let keep = wanted
                .iter()
                .find(|w| &w.name == name)
                .is_some_and(|w| same_socket(w, &running.spec));
            if !keep {
                tracing::info!(listener = %name, bind = %running.spec.bind, "stopping listener");
                running.stop.cancel();
                rebinding.push(running.spec.bind);
            }
            keep
        });
        let mut errors = Vec::new();
        for spec in wanted {
            if let Some(running) = self.running.get_mut(&spec.name) {
                running.spec = spec.clone();
                continue;
            }
            // A stopped listener's sockets close as soon as its workers see
            // the stop; give them a moment before calling the address taken.
            let mut attempts = if rebinding.contains(&spec.bind) { 50 } else { 1 };
            loop {
                attempts -= 1;
                match self.serve(spec) {
                    Ok(()) => break,
                    Err(StartError::Bind { source, .. })
                        if attempts > 0 && source.kind() == io::ErrorKind::AddrInUse =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        errors.push(e);
                        break;
                    }
                }
            }
        }
        errors
    }

    /// Binds one listener (one socket per worker for TCP) and hands the
    /// sockets to the workers.
    fn serve(&mut self, spec: &ListenerSpec) -> Result<(), StartError> {
        let bind_error = |source| StartError::Bind {
            listener: spec.name.clone(),
            protocol: if spec.protocol.is_stream() { "TCP" } else { "UDP" },
            address: spec.bind,
            source,
        };
        let workers = self.inboxes.len();
        let (sockets, registrations): (Vec<Bound>, Vec<Registration>) = match spec.protocol {
            Protocol::Http => listener::tcp_group(spec.bind, workers)
                .map_err(bind_error)?
                .into_iter()
                .map(|(socket, registration)| (Bound::Http(socket), registration))
                .unzip(),
            Protocol::Https => {
                let tls =
                    crate::tls::server_config(Arc::clone(&self.view), spec.http.default_certificate.clone())
                        .map_err(|e| bind_error(io::Error::other(e)))?;
                let (mut sockets, mut registrations): (Vec<Bound>, Vec<Registration>) =
                    listener::tcp_group(spec.bind, workers)
                        .map_err(bind_error)?
                        .into_iter()
                        .map(|(socket, registration)| (Bound::Https(socket, Arc::clone(&tls)), registration))
                        .unzip();
                if let Some(bind) = spec.http3_bind() {
                    let (http3, http3_registrations) = self.bind_http3(spec, bind, workers)?;
                    sockets.extend(http3);
                    registrations.extend(http3_registrations);
                }
                (sockets, registrations)
            }
            Protocol::Tcp => listener::tcp_group(spec.bind, workers)
                .map_err(bind_error)?
                .into_iter()
                .map(|(socket, registration)| (Bound::Tcp(socket), registration))
                .unzip(),
            Protocol::Udp => {
                let (socket, registration) = listener::udp(spec.bind).map_err(bind_error)?;
                (vec![Bound::Udp(socket)], vec![registration])
            }
        };
        let stop = self.shutdown.token.child_token();
        let shutdown = Shutdown {
            token: stop.clone(),
            tracker: self.shutdown.tracker.clone(),
            deadline: self.shutdown.deadline.clone(),
        };
        let limits = Limits {
            listener: Arc::new(Semaphore::new(spec.max_connections as usize)),
            descriptors: Arc::clone(&self.descriptors),
        };
        // An inherited group may hold more sockets than there are workers.
        let mut stream_sockets = 0;
        for socket in sockets {
            let index = match &socket {
                Bound::Http3(_, index, _) => *index,
                _ => {
                    stream_sockets += 1;
                    stream_sockets - 1
                }
            };
            let inbox = &self.inboxes[index % workers];
            let serve = Serve {
                spec: spec.clone(),
                socket,
                limits: limits.clone(),
                shutdown: shutdown.clone(),
            };
            if inbox.send(serve).is_err() {
                tracing::error!(listener = %spec.name, "a data plane worker has stopped");
            }
        }
        tracing::info!(listener = %spec.name, protocol = spec.protocol.name(), bind = %spec.bind, pool = spec.pool.as_deref().unwrap_or("-"), routes = spec.routes.len(), "listening");
        self.running.insert(
            spec.name.clone(),
            Running {
                spec: spec.clone(),
                stop,
                _registrations: registrations,
            },
        );
        Ok(())
    }

    /// Binds `spec`'s HTTP/3 sockets on `bind`: one per worker (at most
    /// [`quic::steering::MAX_SOCKETS`]), steered by connection ID.
    fn bind_http3(
        &self,
        spec: &ListenerSpec,
        bind: SocketAddr,
        workers: usize,
    ) -> Result<(Vec<Bound>, Vec<Registration>), StartError> {
        let bind_error = |source| StartError::Bind {
            listener: spec.name.clone(),
            protocol: "UDP (HTTP/3)",
            address: bind,
            source,
        };
        let count = workers.min(quic::steering::MAX_SOCKETS);
        let config = quic::Http3Config::new(spec, Arc::clone(&self.view), count)
            .map_err(|e| bind_error(io::Error::other(e)))?;
        let config = Arc::new(config);
        Ok(listener::udp_group(bind, count)
            .map_err(bind_error)?
            .into_iter()
            .enumerate()
            .map(|(index, (socket, registration))| {
                (Bound::Http3(socket, index, Arc::clone(&config)), registration)
            })
            .unzip())
    }

    /// Stops accepting, then waits up to `timeout` for connections in flight
    /// to finish; whatever is left then is dropped. Returns how many were left.
    pub async fn drain(self, timeout: Duration) -> usize {
        self.shutdown.token.cancel();
        // Their duplicates in the upgrade registry go too, so the sockets
        // close (a successor, if any, holds its own): new clients are
        // refused, not left in a backlog nobody serves.
        drop(self.running);
        self.shutdown.tracker.close();
        let open = self.shutdown.tracker.len();
        if open > 0 {
            tracing::info!(open, timeout = ?timeout, "draining connections");
        }
        let left = match tokio::time::timeout(timeout, self.shutdown.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.shutdown.tracker.len(),
        };
        self.shutdown.deadline.cancel();
        drop(self.inboxes);
        let workers = self.workers;
        let joined = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        });
        let _ = joined.await;
        left
    }
}

/// Whether two specs of one listener can share its sockets: everything the
/// sockets and their accept loops were built with is the same.
fn same_socket(a: &ListenerSpec, b: &ListenerSpec) -> bool {
    a.protocol == b.protocol
        && a.bind == b.bind
        && a.max_connections == b.max_connections
        && a.idle_timeout == b.idle_timeout
        && a.http == b.http
        && a.quic == b.quic
}

/// One worker thread: a single-threaded runtime serving every listener
/// share it is sent until the hard stop (`shutdown.deadline`), and then
/// the tunnels' last [`splice::LINGER`] to close.
fn run_worker(
    index: usize,
    mut listeners: mpsc::UnboundedReceiver<Serve>,
    view: SharedView,
    shutdown: Shutdown,
) {
    let Shutdown {
        deadline: hard_stop,
        tracker,
        ..
    } = shutdown;
    crate::shard::enter(index);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot build the worker's runtime; it serves nothing");
            return;
        }
    };
    runtime.block_on(async move {
        tokio::spawn(l7::backend_conn::sweep_idle());
        loop {
            let serve = tokio::select! {
                serve = listeners.recv() => serve,
                () = hard_stop.cancelled() => None,
            };
            let Some(Serve {
                spec,
                socket,
                limits,
                shutdown,
            }) = serve
            else {
                break;
            };
            let view = Arc::clone(&view);
            tokio::spawn(async move {
                if let Err(e) = serve_listener(spec.clone(), socket, limits, view, shutdown).await {
                    tracing::error!(listener = %spec.name, worker = index, error = %e, "listener stopped");
                }
            });
        }
        hard_stop.cancelled().await;
        let _ = tokio::time::timeout(splice::LINGER, tracker.wait()).await;
    });
}

async fn serve_listener(
    spec: ListenerSpec,
    socket: Bound,
    limits: Limits,
    view: SharedView,
    shutdown: Shutdown,
) -> io::Result<()> {
    let name = spec.name.clone();
    match socket {
        Bound::Http(socket) => {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            let http = Arc::new(l7::server::HttpListener::new(
                &name,
                &spec.http,
                Arc::clone(&view),
                "http",
            ));
            listener::accept_loop(
                listener,
                &name,
                &view,
                limits.clone(),
                &shutdown,
                move |stream, origin, admitted, shutdown| {
                    let accepted = tokio::time::Instant::now();
                    Arc::clone(&http).serve(stream, origin, admitted, shutdown, accepted, None)
                },
            )
            .await;
        }
        Bound::Https(socket, config) => {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handshake_timeout = spec.http.header_read_timeout;
            let http = Arc::new(l7::server::HttpListener::new(
                &name,
                &spec.http,
                Arc::clone(&view),
                "https",
            ));
            listener::accept_loop(
                listener,
                &name,
                &view,
                limits.clone(),
                &shutdown,
                move |stream, origin, admitted, shutdown| {
                    let (http, acceptor) = (Arc::clone(&http), acceptor.clone());
                    let accepted = tokio::time::Instant::now();
                    let client = origin.client;
                    async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let info = TlsInfo::of(tls.get_ref().1);
                                http.serve(tls, origin, admitted, shutdown, accepted, Some(info))
                                    .await
                            }
                            Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                        }
                    }
                },
            )
            .await;
        }
        Bound::Tcp(socket) => {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            listener::accept_loop(listener, &name, &view, limits.clone(), &shutdown, {
                let (view, name) = (Arc::clone(&view), name.clone());
                move |stream, origin, admitted, shutdown: Shutdown| {
                    let view = Arc::clone(&view);
                    let name = name.clone();
                    async move {
                        l4::tcp::serve(stream, origin, &name, &view, &shutdown.deadline).await;
                        drop(admitted);
                    }
                }
            })
            .await;
        }
        Bound::Http3(socket, index, config) => {
            let tracker = shutdown.tracker.clone();
            tracker
                .track_future(quic::serve(spec, socket, index, config, limits, view, shutdown))
                .await?;
        }
        Bound::Udp(socket) => {
            let socket = tokio::net::UdpSocket::from_std(socket)?;
            shutdown
                .tracker
                .clone()
                .track_future(l4::udp::serve(socket, name, view, limits.descriptors, shutdown))
                .await;
        }
    }
    Ok(())
}
