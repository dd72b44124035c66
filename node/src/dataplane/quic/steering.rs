//! Which worker a QUIC datagram goes to. Each worker of an HTTP/3
//! listener runs its own quinn endpoint on its own socket of one
//! `SO_REUSEPORT` group, and an endpoint must see every datagram of the
//! connections it owns. The kernel's default spread hashes the client's
//! address and port, which a client may change mid-connection (NAT
//! rebinding, migration), so it is replaced by a classic BPF program
//! attached to the group (`SO_ATTACH_REUSEPORT_CBPF`) that picks the
//! socket from the destination connection ID's first byte, modulo the
//! number of sockets:
//!
//! - every connection ID a worker issues ([`WorkerCids`]) has a first byte
//!   equal to the worker's index modulo the group's size, so every later
//!   datagram of its connections (short header: the ID is at byte 1) comes
//!   back to it whatever the client's address;
//! - a client's first datagrams (long header: the ID, of the client's
//!   choosing, is at byte 6) land on the worker that ID's first byte
//!   names, the same one for every retransmission and 0-RTT datagram
//!   until the client switches to the ID the server chose.
//!
//! Socket `i` of the group is the `i`-th bound, which is worker `i`'s. A
//! datagram too short to hold the byte goes to socket 0 (the program's
//! failed load returns 0), whose endpoint drops it as any malformed one.
#![allow(unsafe_code)]

use quinn::ConnectionId;
use quinn::ConnectionIdGenerator;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// Bytes in a connection ID this balancer issues.
pub const CID_LEN: usize = 8;
/// Most sockets (workers) one group steers between: a connection ID's
/// first byte must be able to name each.
pub const MAX_SOCKETS: usize = 128;

/// Attaches the steering program to the `SO_REUSEPORT` group `socket`
/// belongs to, for a group of `sockets` members.
pub fn attach(socket: &impl AsFd, sockets: usize) -> io::Result<()> {
    let modulus = u32::try_from(sockets.clamp(1, MAX_SOCKETS)).unwrap_or(1);
    let program = program(modulus);
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, alive for the call; the kernel
    // copies the instructions.
    let result = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    match result {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The program: `A = dcid[0] % modulus; return A`, where the ID starts at
/// byte 6 of a long header (first bit set) and at byte 1 of a short one.
fn program(modulus: u32) -> [libc::sock_filter; 7] {
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    const MOD_K: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
    const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        op(LD_B_ABS, 0, 0, 0),    // 0: A = first byte
        op(JSET_K, 0, 2, 0x80),   // 1: long header? → 2, else → 4
        op(LD_B_ABS, 0, 0, 6),    // 2: A = long header's DCID[0]
        op(JA, 0, 0, 1),          // 3: → 5
        op(LD_B_ABS, 0, 0, 1),    // 4: A = short header's DCID[0]
        op(MOD_K, 0, 0, modulus), // 5: A %= sockets
        op(RET_A, 0, 0, 0),       // 6: socket A of the group
    ]
}

/// The socket (worker) a datagram goes to, as the program computes it;
/// for tests and the fuzzer of the routing.
pub fn socket_of(datagram: &[u8], sockets: usize) -> usize {
    let modulus = sockets.clamp(1, MAX_SOCKETS);
    let at = match datagram.first() {
        Some(first) if first & 0x80 != 0 => 6,
        Some(_) => 1,
        None => return 0,
    };
    datagram.get(at).map_or(0, |&b| usize::from(b) % modulus)
}

/// Connection IDs for worker `worker` of `sockets`: random, but for a
/// first byte that names the worker ([`socket_of`]).
#[derive(Debug, Clone, Copy)]
pub struct WorkerCids {
    worker: u8,
    sockets: u8,
}

impl WorkerCids {
    pub fn new(worker: usize, sockets: usize) -> WorkerCids {
        let sockets = sockets.clamp(1, MAX_SOCKETS);
        WorkerCids {
            worker: (worker % sockets) as u8,
            sockets: sockets as u8,
        }
    }
}

impl ConnectionIdGenerator for WorkerCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        // Without the OS's randomness nothing else works either; the
        // steering byte below is right whatever the rest holds.
        let _ = getrandom::fill(&mut bytes);
        // The largest multiple of `sockets` a byte holds, so the first
        // byte keeps as much randomness as it can.
        let slots = 256 / u16::from(self.sockets);
        let slot = u16::from(bytes[0]) % slots;
        bytes[0] = (slot * u16::from(self.sockets) + u16::from(self.worker)) as u8;
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_a_worker_issues_brings_its_datagrams_back_to_it() {
        for sockets in [1, 2, 3, 7, 8, 128] {
            for worker in 0..sockets {
                let mut cids = WorkerCids::new(worker, sockets);
                for _ in 0..200 {
                    let cid = cids.generate_cid();
                    let mut short = vec![0x40];
                    short.extend_from_slice(&cid);
                    assert_eq!(socket_of(&short, sockets), worker);
                    let mut long = vec![0xc0, 0, 0, 0, 1, CID_LEN as u8];
                    long.extend_from_slice(&cid);
                    assert_eq!(socket_of(&long, sockets), worker);
                }
            }
        }
    }

    #[test]
    fn the_program_is_accepted_by_the_kernel_and_short_datagrams_go_to_socket_zero() {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
            .unwrap();
        attach(&socket, 2).unwrap();
        assert_eq!(socket_of(&[], 2), 0);
        assert_eq!(socket_of(&[0xc0, 1, 2], 2), 0);
        assert_eq!(socket_of(&[0x40, 3], 2), 1);
    }
}
