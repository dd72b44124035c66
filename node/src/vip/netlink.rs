//! A minimal netlink client: one blocking socket per request batch,
//! messages built from nested attributes, every message acknowledged. Just
//! what the VIP manager needs (rtnetlink addresses, nftables set elements),
//! over netlink-sys's socket, so both speak through one mechanism.

use netlink_sys::{Socket, SocketAddr};
use std::io;
use std::time::Duration;

pub use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

/// A netlink message under construction: header, fixed part, attributes.
#[derive(Debug)]
pub struct Message {
    buf: Vec<u8>,
    /// Offsets of the nested attributes still open.
    open: Vec<usize>,
}

impl Message {
    pub fn new(kind: u16, flags: u16) -> Message {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set on send
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        Message {
            buf,
            open: Vec::new(),
        }
    }

    /// Appends the message's fixed header (`ifaddrmsg`, `nfgenmsg`, …).
    pub fn fixed(mut self, bytes: &[u8]) -> Message {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    pub fn attr(mut self, kind: u16, value: &[u8]) -> Message {
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(self, kind: u16, value: &str) -> Message {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    pub fn begin_nested(mut self, kind: u16) -> Message {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end_nested(mut self) -> Message {
        if let Some(start) = self.open.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The message as built so far.
    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// Sends `messages` in one datagram and waits for the kernel's answer to
/// each one that asked for an acknowledgement. `tolerated` errnos (say,
/// "no such address" when removing one) count as success.
pub fn request(protocol: isize, messages: Vec<Message>, tolerated: &[i32]) -> io::Result<()> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    // A batch the kernel aborts may leave some messages unanswered: wait
    // for answers a bounded time, never forever.
    socket2::SockRef::from(&socket).set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut expected = Vec::new();
    let mut datagram = Vec::new();
    for (seq, message) in (1u32..).zip(messages) {
        let flags = u16::from_ne_bytes([message.buf[6], message.buf[7]]);
        if flags & NLM_F_ACK != 0 {
            expected.push(seq);
        }
        datagram.extend(message.finish(seq));
    }
    socket.send_to(&datagram, &SocketAddr::new(0, 0), 0)?;
    let mut first_error = None;
    while !expected.is_empty() {
        let mut reply = Vec::with_capacity(16 * 1024);
        if let Err(e) = socket.recv(&mut reply, 0) {
            return Err(first_error.unwrap_or(e));
        }
        let mut rest = &reply[..];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if len < 16 || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink reply",
                ));
            }
            if kind == NLMSG_ERROR && len >= 20 {
                let errno = -i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                // An error for a message that asked for no answer (a batch
                // header) means the kernel dropped the batch: nothing else
                // will come.
                if errno != 0 && !expected.contains(&seq) {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                expected.retain(|s| *s != seq);
                if errno != 0 && !tolerated.contains(&errno) && first_error.is_none() {
                    first_error = Some(io::Error::from_raw_os_error(errno));
                }
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
    first_error.map_or(Ok(()), Err)
}
