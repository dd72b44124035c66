//! A `udp` listener's own socket, facing clients. Each datagram is
//! received with the address it was sent to, and a reply leaves from that
//! address: a listener bound to `0.0.0.0` answers a client of the VIP from
//! the VIP, not from the host's own address (which the kernel would pick,
//! and which a client's connected socket, its NAT or QUIC would drop).
//! quinn-udp does the control messages (`IP_PKTINFO`, `IPV6_PKTINFO`), as
//! for the HTTP/3 endpoints; it also turns on GRO, so one receive may hold
//! several datagrams of one sender, each `stride` bytes but the last. It
//! forbids fragmentation too (QUIC finds its path's MTU itself), which a
//! relay must not: a datagram larger than the path goes out in fragments,
//! as before, so those options get their earlier values back.
#![allow(unsafe_code)] // getsockopt(2) and setsockopt(2) of plain integers.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// What one receive holds: `len` bytes from `from` to the local address
/// `to`, in datagrams of `stride` bytes (the last may be shorter).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub from: SocketAddr,
    pub to: Option<IpAddr>,
    pub len: usize,
    pub stride: usize,
}

impl Received {
    /// The datagrams of this receive, out of the buffer it was read into.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        buf[..self.len].chunks(self.stride.max(1))
    }
}

#[derive(Debug)]
pub struct Front {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
}

impl Front {
    pub fn new(socket: UdpSocket) -> io::Result<Front> {
        let fragmentation: Vec<_> = FRAGMENTATION
            .iter()
            .filter_map(|&(level, name)| Some((level, name, get_option(socket.as_fd(), level, name)?)))
            .collect();
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        for (level, name, value) in fragmentation {
            set_option(socket.as_fd(), level, name, value)?;
        }
        Ok(Front { socket, state })
    }

    /// The next datagrams, with where they were sent (cancel-safe).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut meta = [quinn_udp::RecvMeta::default()];
        loop {
            self.socket.readable().await?;
            let read = self.socket.try_io(Interest::READABLE, || {
                self.state
                    .recv((&self.socket).into(), &mut [IoSliceMut::new(buf)], &mut meta)
            });
            match read {
                Ok(_) => {
                    let [meta] = meta;
                    return Ok(Received {
                        from: meta.addr,
                        to: meta.dst_ip,
                        len: meta.len,
                        stride: meta.stride,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `datagram` to `to` from the local address `from` (the one the
    /// client sent to; `None`: the kernel's choice).
    pub async fn send(&self, datagram: &[u8], to: SocketAddr, from: Option<IpAddr>) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: datagram,
            segment_size: None,
            src_ip: from,
        };
        loop {
            self.socket.writable().await?;
            let sent = self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return done,
            }
        }
    }
}

/// The options by which quinn-udp forbids fragmentation (those a socket of
/// the other family does not have are left alone).
const FRAGMENTATION: [(libc::c_int, libc::c_int); 3] = [
    (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
    (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
    (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG),
];

/// An integer socket option's value; `None` where the socket has no such option.
fn get_option(socket: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes for the call, `len`
    // says how many bytes `value` holds.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    (result == 0).then_some(value)
}

fn set_option(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of the length given, for the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match result {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether each fragmentation option of a socket on `address` is what
    /// it was before quinn-udp set the socket up.
    async fn fragmentation_kept(address: &str) {
        let socket = UdpSocket::bind(address).await.expect("bind");
        let before: Vec<_> = FRAGMENTATION
            .iter()
            .map(|&(level, name)| get_option(socket.as_fd(), level, name))
            .collect();
        assert!(
            before.iter().any(Option::is_some),
            "{address}: no option to compare"
        );
        let front = Front::new(socket).expect("front");
        let after: Vec<_> = FRAGMENTATION
            .iter()
            .map(|&(level, name)| get_option(front.socket.as_fd(), level, name))
            .collect();
        assert_eq!(before, after, "{address}: fragmentation options changed");
    }

    #[tokio::test]
    async fn a_front_fragments_as_a_plain_socket_does() {
        fragmentation_kept("127.0.0.1:0").await;
        fragmentation_kept("[::1]:0").await;
    }
}
