//! The data plane: binds every listener, then runs one worker thread per core,
//! each with its own single-threaded async runtime and its own `SO_REUSEPORT`
//! socket for every TCP listener (HAProxy's and nginx's model: a connection,
//! its backend connection and every task serving them stay on one thread, so
//! a request never crosses threads or takes a lock). UDP listeners are served
//! by the first worker. Routing is read only from the shared
//! [`ClusterView`](crate::view::ClusterView).

pub mod l4;
pub mod l7;
pub mod listener;
pub mod upstream;

use crate::view::SharedView;
use raftlb_config::{ListenerSpec, Protocol};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The stop signal and the set of connection tasks a stop waits for.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the node stops accepting.
    pub token: CancellationToken,
    /// Every served connection and session.
    pub tracker: TaskTracker,
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

/// The running workers of one node.
#[derive(Debug)]
pub struct DataPlane {
    shutdown: Shutdown,
    /// Cancelled when the drain time is up: workers drop what is left.
    hard_stop: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

/// A listener's socket for one worker, by protocol.
#[derive(Debug)]
enum Bound {
    Http(std::net::TcpListener),
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// What one worker serves: each listener's spec, its socket, and the
/// connection limit the listener's workers share.
type WorkerListeners = Vec<(ListenerSpec, Bound, Arc<Semaphore>)>;

impl DataPlane {
    /// Binds every listener (all or nothing), then starts `workers` threads.
    pub fn start(
        listeners: &[ListenerSpec],
        view: SharedView,
        workers: usize,
    ) -> Result<DataPlane, StartError> {
        let workers = workers.max(1);
        let mut per_worker: Vec<WorkerListeners> = (0..workers).map(|_| Vec::new()).collect();
        for spec in listeners {
            let bind_error = |source| StartError::Bind {
                listener: spec.name.clone(),
                protocol: if spec.protocol.is_stream() { "TCP" } else { "UDP" },
                address: spec.bind,
                source,
            };
            let limit = Arc::new(Semaphore::new(spec.max_connections as usize));
            match spec.protocol {
                Protocol::Http | Protocol::Tcp => {
                    let sockets = listener::bind_tcp_group(spec.bind, workers).map_err(bind_error)?;
                    for (worker, socket) in per_worker.iter_mut().zip(sockets) {
                        let bound = match spec.protocol {
                            Protocol::Http => Bound::Http(socket),
                            _ => Bound::Tcp(socket),
                        };
                        worker.push((spec.clone(), bound, Arc::clone(&limit)));
                    }
                }
                Protocol::Udp => {
                    let socket = listener::bind_udp(spec.bind).map_err(bind_error)?;
                    per_worker[0].push((spec.clone(), Bound::Udp(socket), limit));
                }
            }
            tracing::info!(listener = %spec.name, protocol = spec.protocol.name(), bind = %spec.bind, pool = %spec.pool, "listening");
        }

        let shutdown = Shutdown::default();
        let hard_stop = CancellationToken::new();
        let mut threads = Vec::with_capacity(workers);
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let (view, shutdown, hard_stop) = (Arc::clone(&view), shutdown.clone(), hard_stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("raftlb-worker-{index}"))
                .spawn(move || run_worker(index, listeners, view, shutdown, hard_stop))
                .map_err(|source| StartError::Worker { index, source })?;
            threads.push(thread);
        }
        Ok(DataPlane {
            shutdown,
            hard_stop,
            workers: threads,
        })
    }

    /// Stops accepting, then waits up to `timeout` for connections in flight
    /// to finish; whatever is left then is dropped. Returns how many were left.
    pub async fn drain(self, timeout: Duration) -> usize {
        self.shutdown.token.cancel();
        self.shutdown.tracker.close();
        let open = self.shutdown.tracker.len();
        if open > 0 {
            tracing::info!(open, timeout = ?timeout, "draining connections");
        }
        let left = match tokio::time::timeout(timeout, self.shutdown.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.shutdown.tracker.len(),
        };
        self.hard_stop.cancel();
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

/// One worker thread: a single-threaded runtime serving its share of every
/// listener until the hard stop.
fn run_worker(
    index: usize,
    listeners: WorkerListeners,
    view: SharedView,
    shutdown: Shutdown,
    hard_stop: CancellationToken,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot build the worker's runtime; it serves nothing");
            return;
        }
    };
    runtime.block_on(async move {
        for (spec, socket, limit) in listeners {
            let (view, shutdown) = (Arc::clone(&view), shutdown.clone());
            tokio::spawn(async move {
                if let Err(e) = serve_listener(spec.clone(), socket, limit, view, shutdown).await {
                    tracing::error!(listener = %spec.name, worker = index, error = %e, "listener stopped");
                }
            });
        }
        hard_stop.cancelled().await;
    });
}

async fn serve_listener(
    spec: ListenerSpec,
    socket: Bound,
    limit: Arc<Semaphore>,
    view: SharedView,
    shutdown: Shutdown,
) -> io::Result<()> {
    let name = spec.name.clone();
    match socket {
        Bound::Http(socket) => {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            let http = Arc::new(l7::server::HttpListener::new(&name, &spec.http, view));
            listener::accept_loop(listener, &name, limit, &shutdown, |stream, peer, shutdown| {
                Arc::clone(&http).serve(stream, peer, shutdown)
            })
            .await;
        }
        Bound::Tcp(socket) => {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            listener::accept_loop(listener, &name, limit, &shutdown, |stream, peer, _| {
                let view = Arc::clone(&view);
                let name = name.clone();
                async move { l4::tcp::serve(stream, peer, &name, &view).await }
            })
            .await;
        }
        Bound::Udp(socket) => {
            let socket = tokio::net::UdpSocket::from_std(socket)?;
            shutdown
                .tracker
                .clone()
                .track_future(l4::udp::serve(socket, name, view, shutdown))
                .await;
        }
    }
    Ok(())
}
