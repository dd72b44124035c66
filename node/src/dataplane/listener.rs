//! Listening sockets and the accept loop every stream listener shares:
//! admission (the listener's ACL and per-source limits, see
//! [`admission`](super::admission)) before anything else, a cap on
//! concurrent connections (excess connections wait in the kernel's
//! backlog) and a stop signal that ends accepting while served connections
//! go on. An `accept_proxy` listener reads each connection's PROXY header
//! first, and admits the client it names. Every listening socket is registered for an in-place upgrade,
//! and taken from the predecessor's when there is one.

use super::admission::{self, Admitted, Refusal};
use super::proxy_protocol::{self, Origin};
use super::{Limits, Shutdown};
use crate::upgrade::sockets::{self, Key, Kind, Registration};
use crate::view::SharedView;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

const BACKLOG: i32 = 4096;

/// A listening socket and its place in the registry a successor takes
/// sockets from ([`sockets`]).
pub type Registered<S> = (S, Registration);

/// `count` TCP listening sockets on one address with `SO_REUSEPORT`, one
/// per worker, so the kernel spreads new connections over the workers and
/// each worker accepts on its own socket. After an in-place upgrade, every
/// socket of the predecessor's group (however many: a worker may serve
/// several), topped up to `count` with new members. Else a new group:
/// `SO_REUSEPORT` would also let an unrelated process join it silently, so
/// the address is first probed with a plain bind, which fails if anyone
/// already listens there.
pub fn tcp_group(address: SocketAddr, count: usize) -> io::Result<Vec<Registered<std::net::TcpListener>>> {
    let key = Key::new(Kind::Tcp, address);
    let mut group = sockets::take_all(key)
        .into_iter()
        .map(|fd| sockets::checked(fd.into(), address))
        .collect::<io::Result<Vec<_>>>()?;
    if group.is_empty() {
        drop(tcp_socket(address, false)?);
    }
    while group.len() < count.max(1) {
        group.push(tcp_socket(address, true)?.into());
    }
    group
        .into_iter()
        .map(|socket| {
            socket.set_nonblocking(true)?;
            let registration = sockets::register(key, socket.as_fd())?;
            Ok((socket, registration))
        })
        .collect()
}

/// A listening TCP socket on `address` (non-blocking), one of a
/// `SO_REUSEPORT` group if `reuse_port`.
pub(crate) fn tcp_socket(address: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Lets a restarted node bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// A UDP listener's socket: the predecessor's after an in-place upgrade,
/// else a new one.
pub fn udp(address: SocketAddr) -> io::Result<Registered<std::net::UdpSocket>> {
    let key = Key::new(Kind::Udp, address);
    let socket = match sockets::take(key) {
        Some(fd) => {
            let socket = std::net::UdpSocket::from(fd);
            match socket.local_addr()? {
                found if found == address => socket,
                found => {
                    return Err(io::Error::other(format!(
                        "the socket inherited for {address} is bound to {found}"
                    )));
                }
            }
        }
        None => std::net::UdpSocket::bind(address)?,
    };
    socket.set_nonblocking(true)?;
    let registration = sockets::register(key, socket.as_fd())?;
    Ok((socket, registration))
}

/// `count` UDP sockets on one address with `SO_REUSEPORT`, one per worker
/// of an HTTP/3 listener, their datagrams steered by QUIC connection ID
/// ([`steering`](super::quic::steering)): the predecessor's group after an
/// in-place upgrade (in the order it registered them, which is the
/// group's), else a new one, the address probed first as for TCP.
pub fn udp_group(address: SocketAddr, count: usize) -> io::Result<Vec<Registered<std::net::UdpSocket>>> {
    let key = Key::new(Kind::Udp, address);
    let mut group: Vec<std::net::UdpSocket> = sockets::take_all(key).into_iter().map(Into::into).collect();
    if group.is_empty() {
        drop(std::net::UdpSocket::bind(address)?);
    }
    while group.len() < count.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_reuse_port(true)?;
        socket.bind(&address.into())?;
        group.push(socket.into());
    }
    super::quic::steering::attach(&group[0], group.len())?;
    group
        .into_iter()
        .map(|socket| {
            if socket.local_addr()? != address {
                return Err(io::Error::other(format!(
                    "a socket inherited for {address} is bound to {}",
                    socket.local_addr()?
                )));
            }
            socket.set_nonblocking(true)?;
            let registration = sockets::register(key, socket.as_fd())?;
            Ok((socket, registration))
        })
        .collect()
}

/// Accepts connections until shutdown, each handed to `serve` on its own
/// task of this worker, tracked for draining. `limit` (shared by the workers
/// of one listener) caps the connections served at once. A worker accepts
/// first and then waits for a permit (its listener's `max_connections`,
/// then the data plane's share of descriptors): each worker has its own
/// `SO_REUSEPORT` queue, and a worker that took a permit before accepting
/// could hold it idle while another worker's queue has a client waiting.
/// At most one accepted connection per worker waits for a permit; the rest
/// wait in the kernel's backlog. A connection admission refuses is reset
/// at once (no permit, no task, no TLS). On an `accept_proxy` listener a
/// peer outside `proxy_trusted` is reset at once too; a trusted one's
/// PROXY header is read on the connection's task (within the listener's
/// `header_read_timeout`), and admission judges the client it names.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &str,
    view: &SharedView,
    limits: Limits,
    shutdown: &Shutdown,
    serve: F,
) where
    F: Fn(TcpStream, Origin, Admitted, Shutdown) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.token.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or memory: back off instead of
                // spinning, and say so once per pause, not per failure.
                tracing::warn!(listener = name, error = %e, "accept failed; pausing 20ms");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(arrival) = arrive(view, name, &stream, peer) else {
            continue;
        };
        let permits = async {
            let listener = Arc::clone(&limits.listener).acquire_owned().await.ok()?;
            let descriptors = Arc::clone(&limits.descriptors).acquire_owned().await.ok()?;
            Some((listener, descriptors))
        };
        // An accepted connection is served even if the stop came meanwhile
        // (dropping it would reset a request already sent): the permits
        // come first, the stop only ends a wait for them.
        let permits: (OwnedSemaphorePermit, OwnedSemaphorePermit) = tokio::select! {
            biased;
            permits = permits => match permits {
                Some(permits) => permits,
                None => return,
            },
            () = shutdown.token.cancelled() => return,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(listener = name, error = %e, "set_nodelay failed");
        }
        let (serve, view, name, shutdown) = (
            Arc::clone(&serve),
            Arc::clone(view),
            name.to_string(),
            shutdown.clone(),
        );
        shutdown.tracker.clone().spawn(async move {
            if let Some((stream, origin, admitted)) = arrival.complete(stream, peer, &view, &name).await {
                serve(stream, origin, admitted, shutdown).await;
            }
            drop(permits);
        });
    }
}

/// What is known of a connection when it is accepted.
enum Arrival {
    /// Admitted: its peer is its client.
    Admitted(Admitted),
    /// From a trusted proxy: its PROXY header, within `timeout`, names
    /// the client to admit.
    Proxied { timeout: Duration },
}

impl Arrival {
    /// The connection with the client it speaks for, admitted; `None`
    /// (the connection reset, the refusal counted) when it is not.
    async fn complete(
        self,
        mut stream: TcpStream,
        peer: SocketAddr,
        view: &SharedView,
        name: &str,
    ) -> Option<(TcpStream, Origin, Admitted)> {
        let local = stream.local_addr().ok()?;
        let (client, admitted) = match self {
            Arrival::Admitted(admitted) => (peer, admitted),
            Arrival::Proxied { timeout } => {
                let read = tokio::time::timeout(timeout, proxy_protocol::read(&mut stream)).await;
                let client = match read {
                    Ok(Ok(named)) => named.unwrap_or(peer),
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no PROXY header within {timeout:?}"),
                        };
                        tracing::debug!(listener = name, %peer, %error, "connection refused");
                        if let Some(listener) = view.load().listener(name) {
                            listener.guard.count(Refusal::ProxyHeader);
                        }
                        reset(&stream);
                        return None;
                    }
                };
                (client, admit(view, name, &stream, client)?)
            }
        };
        Some((stream, Origin::new(client, local), admitted))
    }
}

/// Admits a connection of listener `name` from `peer`, unless the listener
/// takes PROXY headers (then only checks that `peer` may send one); resets
/// it and says why at debug level otherwise (a flood must not flood the log).
fn arrive(view: &SharedView, name: &str, stream: &TcpStream, peer: SocketAddr) -> Option<Arrival> {
    let loaded = view.load();
    let listener = loaded.listener(name)?;
    if !listener.spec.accepts_proxy() {
        return admit(view, name, stream, peer).map(Arrival::Admitted);
    }
    if !raftlb_config::proxy::trusted(&listener.spec.proxy_trusted, peer.ip()) {
        listener.guard.count(Refusal::ProxyUntrusted);
        tracing::debug!(listener = name, client = %peer, reason = Refusal::ProxyUntrusted.name(), "connection refused");
        reset(stream);
        return None;
    }
    Some(Arrival::Proxied {
        timeout: listener.spec.http.header_read_timeout,
    })
}

/// Admits a connection of listener `name` from `client`, or resets it and
/// says why at debug level (a flood must not flood the log).
fn admit(view: &SharedView, name: &str, stream: &TcpStream, client: SocketAddr) -> Option<Admitted> {
    let view = view.load();
    let listener = view.listener(name)?;
    let now = crate::health::now_ms();
    match admission::admit(
        &listener.guard,
        &listener.acl,
        &listener.spec.limits,
        client.ip(),
        now,
    ) {
        Ok(admitted) => Some(admitted),
        Err(refusal) => {
            tracing::debug!(listener = name, %client, reason = refusal.name(), "connection refused");
            reset(stream);
            None
        }
    }
}

/// A reset, not a FIN: no TIME_WAIT here, nothing for the client to read.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
