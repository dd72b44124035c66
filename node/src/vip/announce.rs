//! Announcing a VIP: tells the segment that it now lives at this node's
//! MAC address, so switches and clients update their caches at once instead
//! of when their entries age out.
//!
//! - IPv4: a gratuitous ARP, an ARP request for the VIP from the VIP
//!   (RFC 5227's announcement), on a raw packet socket.
//! - IPv6: an unsolicited neighbour advertisement (RFC 4861 §7.2.6) to all
//!   nodes (`ff02::1`) from the VIP, Override set, with this node's MAC as
//!   the target link-layer address, on a raw ICMPv6 socket (the kernel
//!   fills in the checksum). It leaves through the IP stack, so the fence's
//!   output rule passes it only while the lease lasts.
//!
//! The one place raftlb calls libc directly: neither std nor socket2 can
//! address a link-layer (`sockaddr_ll`) destination safely. Each unsafe
//! block is a single system call on values built right before it; the
//! IPv6 path needs none.
#![allow(unsafe_code)]

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Neighbour advertisement flags: Override (Router and Solicited clear).
const NA_OVERRIDE: u8 = 0x20;
/// Neighbour discovery option: target link-layer address.
const OPTION_TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// Neighbour discovery messages must arrive with hop limit 255.
const ND_HOP_LIMIT: u32 = 255;

/// The MAC address of interface `name`.
pub fn mac_address(name: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let part = parts.next().unwrap_or("");
        *byte = u8::from_str_radix(part, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("MAC address of {name}: \"{}\"", text.trim()),
            )
        })?;
    }
    Ok(mac)
}

/// The Ethernet frame of a gratuitous ARP for `vip` from `mac`.
fn frame(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&BROADCAST);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    frame.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    frame.extend_from_slice(&[6, 4]);
    frame.extend_from_slice(&1u16.to_be_bytes()); // request
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&vip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&vip.octets());
    frame
}

/// The packet socket every gratuitous ARP leaves by, opened once and kept
/// for the process's life: closing a packet socket waits for an RCU grace
/// period, tens of milliseconds on a busy host, and announcements run on
/// the control runtime, whose leases cannot wait that long. Protocol 0: it
/// only sends, and nothing queues on it.
fn packet_socket() -> io::Result<BorrowedFd<'static>> {
    static SOCKET: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(socket) = SOCKET.get() {
        return Ok(socket.as_fd());
    }
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(SOCKET.get_or_init(|| socket).as_fd())
}

/// Sends one gratuitous ARP for `vip` out of interface `index`.
pub fn gratuitous_arp(index: u32, mac: [u8; 6], vip: Ipv4Addr) -> io::Result<()> {
    let socket = packet_socket()?;
    // SAFETY: a zeroed sockaddr_ll, filled in below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = i32::try_from(index).unwrap_or(0);
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&BROADCAST);
    let frame = frame(mac, vip);
    // SAFETY: the frame and address outlive the call; lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ICMPv6 message of an unsolicited neighbour advertisement for `vip`
/// at `mac`; the checksum is left zero for the kernel.
fn neighbour_advertisement(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let mut message = Vec::with_capacity(32);
    message.extend_from_slice(&[ICMPV6_NEIGHBOUR_ADVERTISEMENT, 0, 0, 0]); // type, code, checksum
    message.extend_from_slice(&[NA_OVERRIDE, 0, 0, 0]);
    message.extend_from_slice(&vip.octets());
    message.extend_from_slice(&[OPTION_TARGET_LINK_LAYER_ADDRESS, 1]); // length: 8 bytes
    message.extend_from_slice(&mac);
    message
}

/// Sends one unsolicited neighbour advertisement for `vip` (an address of
/// this host) out of `interface` (index `index`) to all nodes.
pub fn unsolicited_neighbour_advertisement(
    interface: &str,
    index: u32,
    mac: [u8; 6],
    vip: Ipv6Addr,
) -> io::Result<()> {
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_multicast_if_v6(index)?;
    socket.set_multicast_hops_v6(ND_HOP_LIMIT)?;
    socket.set_multicast_loop_v6(false)?;
    socket.bind(&SockAddr::from(SocketAddrV6::new(vip, 0, 0, 0)))?;
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, index);
    socket.send_to(&neighbour_advertisement(mac, vip), &SockAddr::from(all_nodes))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_announces_the_vip_from_the_vip() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = frame(mac, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "an ARP request");
        assert_eq!(&f[22..28], &mac, "sender MAC");
        assert_eq!(&f[28..32], &[198, 18, 0, 100], "sender IP");
        assert_eq!(&f[38..42], &[198, 18, 0, 100], "target IP: the same");
    }

    #[test]
    fn the_advertisement_overrides_caches_with_our_mac() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
        let m = neighbour_advertisement(mac, vip);
        assert_eq!(m.len(), 32);
        assert_eq!(m[0], 136, "a neighbour advertisement");
        assert_eq!(m[4], 0x20, "Override only: not Router, not Solicited");
        assert_eq!(&m[8..24], &vip.octets(), "target: the VIP");
        assert_eq!(&m[24..26], &[2, 1], "target link-layer address, 8 bytes");
        assert_eq!(&m[26..32], &mac);
    }
}
