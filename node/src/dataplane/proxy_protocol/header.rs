//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`), pure: no
//! I/O. [`parse`] reads a header, v1 (a text line) or v2 (binary), from
//! the bytes a connection starts with, saying when more are needed and
//! never reading past its end; [`encode`] writes one. v2 TLVs are skipped
//! (the whole header is bounded by [`MAX_V2_LEN`]); `LOCAL` (v2) and
//! `UNKNOWN` (v1) name no addresses.

use raftlb_config::ProxyVersion;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What every v1 line starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, `\r\n` included.
pub const MAX_V1_LEN: usize = 107;
/// The longest v2 header this parser takes, TLVs included.
pub const MAX_V2_LEN: usize = 16 + 2048;
const V2_FIXED: usize = 16;

/// Addresses a header names: the client's and the one it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// What the bytes read so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A header may still follow: read more.
    Incomplete,
    /// A whole header of `len` bytes; `None`: it names no addresses (v2
    /// `LOCAL`, an unspecified or unix family; v1 `UNKNOWN`), so the
    /// connection's own peer stands.
    Complete {
        len: usize,
        addresses: Option<Addresses>,
    },
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("no PROXY protocol signature")]
    Signature,
    #[error("a v1 line longer than {MAX_V1_LEN} bytes")]
    V1TooLong,
    #[error("a v1 line with a bad {0}")]
    V1Field(&'static str),
    #[error("v2 version {0} (only 2 exists)")]
    Version(u8),
    #[error("v2 command {0} (LOCAL is 0, PROXY 1)")]
    Command(u8),
    #[error("v2 address family/protocol {0:#04x}")]
    Family(u8),
    #[error("v2 length {0} too short for its addresses")]
    Short(usize),
    #[error("v2 length {0} beyond the {MAX_V2_LEN}-byte bound")]
    TooLong(usize),
}

/// Reads a header from the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Parsed, Malformed> {
    if starts_like(bytes, &V2_SIGNATURE) {
        return match bytes.len() < V2_SIGNATURE.len() {
            true => Ok(Parsed::Incomplete),
            false => parse_v2(bytes),
        };
    }
    if starts_like(bytes, V1_PREFIX) {
        return match bytes.len() < V1_PREFIX.len() {
            true => Ok(Parsed::Incomplete),
            false => parse_v1(bytes),
        };
    }
    Err(Malformed::Signature)
}

/// Whether `bytes` and `prefix` agree as far as both go.
fn starts_like(bytes: &[u8], prefix: &[u8]) -> bool {
    let n = bytes.len().min(prefix.len());
    bytes[..n] == prefix[..n]
}

fn parse_v1(bytes: &[u8]) -> Result<Parsed, Malformed> {
    let window = &bytes[..bytes.len().min(MAX_V1_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return match bytes.len() >= MAX_V1_LEN {
            true => Err(Malformed::V1TooLong),
            false => Ok(Parsed::Incomplete),
        };
    };
    let len = end + 2;
    let line = std::str::from_utf8(&bytes[V1_PREFIX.len()..end]).map_err(|_| Malformed::V1Field("text"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Parsed::Complete { len, addresses: None });
    }
    let v4 = match family {
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err(Malformed::V1Field("protocol")),
    };
    let mut address = |what| {
        let text = fields.next().ok_or(Malformed::V1Field(what))?;
        let ip: IpAddr = match v4 {
            true => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            false => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        }
        .map_err(|_| Malformed::V1Field(what))?;
        Ok(ip)
    };
    let (source, destination) = (address("source address")?, address("destination address")?);
    let mut port = |what| {
        let text = fields.next().ok_or(Malformed::V1Field(what))?;
        match text.bytes().all(|b| b.is_ascii_digit()) {
            true => text.parse::<u16>().map_err(|_| Malformed::V1Field(what)),
            false => Err(Malformed::V1Field(what)),
        }
    };
    let (source_port, destination_port) = (port("source port")?, port("destination port")?);
    if fields.next().is_some() {
        return Err(Malformed::V1Field("field count"));
    }
    Ok(Parsed::Complete {
        len,
        addresses: Some(Addresses {
            source: SocketAddr::new(source, source_port),
            destination: SocketAddr::new(destination, destination_port),
        }),
    })
}

fn parse_v2(bytes: &[u8]) -> Result<Parsed, Malformed> {
    let Some(fixed) = bytes.get(..V2_FIXED) else {
        return Ok(Parsed::Incomplete);
    };
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(Malformed::Version(version));
    }
    if command > 1 {
        return Err(Malformed::Command(command));
    }
    let family = fixed[13];
    let payload = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let len = V2_FIXED + payload;
    if len > MAX_V2_LEN {
        return Err(Malformed::TooLong(payload));
    }
    // Family (high nibble): unspecified, inet, inet6, unix; protocol (low):
    // unspecified, stream, dgram.
    let needed = match family >> 4 {
        _ if family & 0x0f > 2 => return Err(Malformed::Family(family)),
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(Malformed::Family(family)),
    };
    if payload < needed {
        return Err(Malformed::Short(payload));
    }
    let Some(body) = bytes.get(V2_FIXED..len) else {
        return Ok(Parsed::Incomplete);
    };
    let addresses = match (command, family >> 4) {
        (1, 1) => {
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap_or_default());
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Some(Addresses {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        (1, 2) => {
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap_or_default());
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Some(Addresses {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        // LOCAL, or addresses that are no IP's: the peer stands.
        _ => None,
    };
    Ok(Parsed::Complete { len, addresses })
}

/// A header of `version` naming `addresses`, or none (v1 `UNKNOWN`, v2
/// `LOCAL`: what a health check sends). Addresses of two families are
/// both written as IPv6 (IPv4-mapped).
pub fn encode(version: ProxyVersion, addresses: Option<Addresses>) -> Vec<u8> {
    let addresses = addresses.map(|a| match (a.source.ip(), a.destination.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => a,
        _ => Addresses {
            source: SocketAddr::new(IpAddr::V6(v6(a.source.ip())), a.source.port()),
            destination: SocketAddr::new(IpAddr::V6(v6(a.destination.ip())), a.destination.port()),
        },
    });
    match version {
        ProxyVersion::V1 => match addresses {
            None => b"PROXY UNKNOWN\r\n".to_vec(),
            Some(a) => {
                let family = if a.source.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    a.source.ip(),
                    a.destination.ip(),
                    a.source.port(),
                    a.destination.port()
                )
                .into_bytes()
            }
        },
        ProxyVersion::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            match addresses {
                None => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
                Some(a) => {
                    let (family, len) = if a.source.is_ipv4() {
                        (0x11, 12u16)
                    } else {
                        (0x21, 36)
                    };
                    out.extend_from_slice(&[0x21, family]);
                    out.extend_from_slice(&len.to_be_bytes());
                    for ip in [a.source.ip(), a.destination.ip()] {
                        match ip {
                            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
                            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
                        }
                    }
                    out.extend_from_slice(&a.source.port().to_be_bytes());
                    out.extend_from_slice(&a.destination.port().to_be_bytes());
                }
            }
            out
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
