//! Clients as source addresses: a TCP connection or one `GET` from a given
//! address (127.0.0.N on loopback, or a namespace host's own), whether the
//! node has reset a connection, and the node's count of refusals by reason.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A TCP connection to `to` from source address `from`.
pub fn connect_from(from: [u8; 4], to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::from(from), 0).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

/// Whether the node has reset (or closed) `stream` by now.
pub fn is_reset(stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let reset = match (&*stream).read(&mut [0u8; 1]) {
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        Ok(_) => true,
    };
    let _ = stream.set_nonblocking(false);
    reset
}

/// One `GET /` on a new connection from `from`: its status line's code
/// (`None`: reset or closed before an answer) and how long it took.
pub fn get_from(from: [u8; 4], to: SocketAddr) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let answer = (|| {
        let mut stream = connect_from(from, to, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
    })();
    (answer, started.elapsed())
}

/// The value of `raftlb_client_refusals_total` for `reason` on listener web.
pub fn refusals(metrics: &str, reason: &str) -> u64 {
    let label = format!("raftlb_client_refusals_total{{listener=\"web\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&label)?.trim().parse().ok())
        .unwrap_or(0)
}
