//! The DNS sockets: UDP (a few tasks on one socket) and TCP (RFC 7766
//! length-prefixed messages, several per connection), bounded: at most
//! [`MAX_TCP_CONNECTIONS`] connections, each closed after
//! [`TCP_IDLE`] without a query. Every message goes to
//! [`answer::respond`]; nothing here parses DNS. The sockets are
//! registered for an in-place upgrade and taken from the predecessor, as
//! listeners' are ([`listener`]): a successor answers on the very
//! sockets, so no query finds the port closed or taken.

use super::SharedZone;
use super::answer::{self, Transport};
use crate::dataplane::listener;
use crate::upgrade::sockets::Registration;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Most TCP connections served at once; more are closed at accept.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection without a query for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// The running sockets; dropping it stops them.
#[derive(Debug)]
pub struct Server {
    tasks: Vec<JoinHandle<()>>,
    /// The sockets' places in the upgrade registry, while they are served.
    _registrations: Vec<Registration>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Server {
    /// Binds UDP and TCP on `at` and serves `zone` with `workers` UDP tasks.
    /// The predecessor's sockets after an in-place upgrade, else new ones.
    pub fn bind(at: SocketAddr, zone: SharedZone, workers: usize) -> io::Result<Server> {
        let (udp, udp_registration) = listener::udp(at)?;
        let udp = Arc::new(UdpSocket::from_std(udp)?);
        let mut registrations = vec![udp_registration];
        let mut tasks = Vec::new();
        for _ in 0..workers.clamp(1, 4) {
            tasks.push(tokio::spawn(serve_udp(Arc::clone(&udp), Arc::clone(&zone))));
        }
        // One socket, or every one a predecessor served.
        for (tcp, registration) in listener::tcp_group(at, 1)? {
            registrations.push(registration);
            let tcp = TcpListener::from_std(tcp)?;
            tasks.push(tokio::spawn(serve_tcp(tcp, Arc::clone(&zone))));
        }
        Ok(Server {
            tasks,
            _registrations: registrations,
        })
    }
}

/// A cheap per-query seed for weighted choices (splitmix64 of a counter).
fn seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut z = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn serve_udp(socket: Arc<UdpSocket>, zone: SharedZone) {
    // One byte more than the largest query read, to tell a larger one.
    let mut buffer = vec![0u8; answer::MAX_UDP_QUERY + 1];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "GSLB: UDP receive failed");
                continue;
            }
        };
        let Some(zone) = zone.load_full() else { continue };
        if let Some(response) = answer::respond(&zone, &buffer[..len], peer.ip(), Transport::Udp, seed()) {
            let _ = socket.send_to(&response, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: SharedZone) {
    let permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors: pause rather than spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let zone = Arc::clone(&zone);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = serve_connection(stream, peer, zone).await;
        });
    }
}

/// Queries of one TCP connection, answered in order, until it closes, goes
/// idle or sends something that gets no answer.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, zone: SharedZone) -> io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(len) => usize::from(len?),
            Err(_) => return Ok(()),
        };
        buffer.resize(len, 0);
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buffer))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let Some(zone) = zone.load_full() else {
            return Ok(());
        };
        let Some(response) = answer::respond(&zone, &buffer, peer.ip(), Transport::Tcp, seed()) else {
            return Ok(());
        };
        let Ok(prefix) = u16::try_from(response.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&prefix.to_be_bytes());
        framed.extend_from_slice(&response);
        stream.write_all(&framed).await?;
    }
}
