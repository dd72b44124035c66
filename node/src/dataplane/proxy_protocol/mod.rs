//! The PROXY protocol on connections: reading the header a trusted peer
//! puts before a client's bytes ([`read`]), and writing one before ours to
//! a backend ([`send`]). The header's format is [`header`]'s.

pub mod header;

use header::{Addresses, Malformed, Parsed};
use raftlb_config::ProxyVersion;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Who a client connection speaks for: the client (as an accepted PROXY
/// header names it, else the socket's peer), the local address it reached,
/// and a number no other connection of this process has (a backend
/// connection that names this client is kept for it alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub id: u64,
}

impl Origin {
    pub fn new(client: SocketAddr, local: SocketAddr) -> Origin {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Origin {
            client,
            local,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// Why a connection's PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("malformed PROXY header: {0}")]
    Malformed(#[from] Malformed),
    #[error("closed before its PROXY header ended")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Reads the PROXY header `stream` starts with, and not a byte more: what
/// follows is the client's. `None`: the header names no client (`LOCAL`,
/// `UNKNOWN`), the peer stands. The caller bounds the time it takes.
pub async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ReadError> {
    let mut header = Vec::with_capacity(64);
    let mut peeked = [0u8; 512];
    loop {
        let available = stream.peek(&mut peeked).await?;
        if available == 0 {
            return Err(ReadError::Closed);
        }
        let had = header.len();
        header.extend_from_slice(&peeked[..available]);
        // Bytes before the header's end are the header's: take them.
        let take = match header::parse(&header)? {
            Parsed::Incomplete => available,
            Parsed::Complete { len, addresses } => {
                stream.read_exact(&mut peeked[..len - had]).await?;
                return Ok(addresses.map(|a| a.source));
            }
        };
        stream.read_exact(&mut peeked[..take]).await?;
    }
}

/// Writes a PROXY header of `version` to `io`, naming `origin`'s client and
/// local address, or no one (`None`: a connection of the balancer's own,
/// such as a health check).
pub async fn send<W: AsyncWrite + AsyncRead + Unpin>(
    io: &mut W,
    version: ProxyVersion,
    origin: Option<&Origin>,
) -> io::Result<()> {
    let addresses = origin.map(|o| Addresses {
        source: o.client,
        destination: o.local,
    });
    io.write_all(&header::encode(version, addresses)).await
}
