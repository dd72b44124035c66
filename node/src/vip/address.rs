//! Adding and removing a VIP on its interface through rtnetlink
//! (`RTM_NEWADDR` / `RTM_DELADDR`), as `ip addr add|del` would. An IPv6
//! VIP is added with `IFA_F_NODAD` (`ip addr add … nodad`): the Raft lease
//! already says no other node holds it, and duplicate address detection
//! would leave it unusable (tentative) for a second or more.

use super::netlink::{self, Message, NETLINK_ROUTE, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
use std::io;
use std::net::IpAddr;

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// `ifa_flags`: skip duplicate address detection (IPv6).
const IFA_F_NODAD: u8 = 0x02;

/// The index of interface `name`, or an error naming it.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let path = format!("/sys/class/net/{name}/ifindex");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("no interface named \"{name}\" ({path}: {e})")))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: \"{}\"", text.trim())))
}

fn message(kind: u16, flags: u16, index: u32, address: IpAddr, prefix_len: u8) -> Message {
    let (family, ifa_flags, octets) = match address {
        IpAddr::V4(v4) => (libc::AF_INET, 0, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6, IFA_F_NODAD, v6.octets().to_vec()),
    };
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    let mut fixed = vec![family as u8, prefix_len, ifa_flags, 0];
    fixed.extend_from_slice(&index.to_ne_bytes());
    Message::new(kind, flags)
        .fixed(&fixed)
        .attr(IFA_LOCAL, &octets)
        .attr(IFA_ADDRESS, &octets)
}

/// Adds `address/prefix_len` to interface `index`; adding it again is fine.
pub fn add(index: u32, address: IpAddr, prefix_len: u8) -> io::Result<()> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    netlink::request(
        NETLINK_ROUTE,
        vec![message(RTM_NEWADDR, flags, index, address, prefix_len)],
        &[],
    )
}

/// Removes `address/prefix_len` from interface `index`; absent is fine.
pub fn remove(index: u32, address: IpAddr, prefix_len: u8) -> io::Result<()> {
    netlink::request(
        NETLINK_ROUTE,
        vec![message(
            RTM_DELADDR,
            NLM_F_REQUEST | NLM_F_ACK,
            index,
            address,
            prefix_len,
        )],
        &[libc::EADDRNOTAVAIL, libc::ENOENT, libc::ENODEV],
    )
}
