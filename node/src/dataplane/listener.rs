//! Listening sockets and the accept loop every stream listener shares:
//! admission (the listener's ACL and per-source limits, see
//! [`admission`](super::admission)) before anything else, a cap on
//! concurrent connections (excess connections wait in the kernel's
//! backlog) and a stop signal that ends accepting while served connections
//! go on. Every listening socket is registered for an in-place upgrade,
//! and taken from the predecessor's when there is one.

use super::admission::{self, Admitted};
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

/// Accepts connections until shutdown, each handed to `serve` on its own
/// task of this worker, tracked for draining. `limit` (shared by the workers
/// of one listener) caps the connections served at once. A worker accepts
/// first and then waits for a permit (its listener's `max_connections`,
/// then the data plane's share of descriptors): each worker has its own
/// `SO_REUSEPORT` queue, and a worker that took a permit before accepting
/// could hold it idle while another worker's queue has a client waiting.
/// At most one accepted connection per worker waits for a permit; the rest
/// wait in the kernel's backlog. A connection admission refuses is reset
/// at once (no permit, no task, no TLS).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &str,
    view: &SharedView,
    limits: Limits,
    shutdown: &Shutdown,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Admitted, Shutdown) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
        let Some(admitted) = admit(view, name, &stream, peer) else {
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
        let served = serve(stream, peer, admitted, shutdown.clone());
        shutdown.tracker.spawn(async move {
            served.await;
            drop(permits);
        });
    }
}

/// Admits a connection of listener `name` from `peer`, or resets it and
/// says why at debug level (a flood must not flood the log).
fn admit(view: &SharedView, name: &str, stream: &TcpStream, peer: SocketAddr) -> Option<Admitted> {
    let view = view.load();
    let listener = view.listener(name)?;
    let now = crate::health::now_ms();
    match admission::admit(
        &listener.guard,
        &listener.acl,
        &listener.spec.limits,
        peer.ip(),
        now,
    ) {
        Ok(admitted) => Some(admitted),
        Err(refusal) => {
            tracing::debug!(listener = name, client = %peer, reason = refusal.name(), "connection refused");
            // A reset, not a FIN: no TIME_WAIT here, nothing for the client to read.
            let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
            None
        }
    }
}
