//! IPv6 neighbour discovery frames for the prober in [`crate::arp`]: the
//! neighbour solicitation a host sends to learn who has an address, and
//! the recognition of a neighbour advertisement for it (RFC 4861). The
//! solicitation goes out on a packet socket, so its ICMPv6 checksum is
//! computed here.

use std::net::Ipv6Addr;

pub const ETH_P_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Ethernet (14) + IPv6 (40) bytes before the ICMPv6 message.
const ICMP_AT: usize = 54;

/// The solicited-node multicast address of `target` (ff02::1:ffXX:XXXX).
fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The ICMPv6 checksum over the pseudo-header and `message`.
fn checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&u32::try_from(message.len()).expect("short message").to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Ethernet destination of [`solicitation`]: the group's multicast MAC.
pub fn solicitation_destination(target: Ipv6Addr) -> [u8; 6] {
    let o = solicited_node(target).octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// An Ethernet frame asking who has `target`, from `me` at `mac`.
pub fn solicitation(mac: [u8; 6], me: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    let mut message = vec![NEIGHBOUR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(&[1, 1]); // source link-layer address, 8 bytes
    message.extend_from_slice(&mac);
    let sum = checksum(me, group, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut frame = Vec::with_capacity(ICMP_AT + message.len());
    frame.extend_from_slice(&solicitation_destination(target));
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]); // version 6
    frame.extend_from_slice(&u16::try_from(message.len()).expect("short").to_be_bytes());
    frame.extend_from_slice(&[ICMPV6, 255]); // next header, hop limit
    frame.extend_from_slice(&me.octets());
    frame.extend_from_slice(&group.octets());
    frame.extend_from_slice(&message);
    frame
}

/// Whether `frame` is a neighbour advertisement for `target` (solicited or
/// not; either claims the address).
pub fn advertises(frame: &[u8], target: Ipv6Addr) -> bool {
    frame.len() >= ICMP_AT + 24
        && frame[12..14] == ETH_P_IPV6.to_be_bytes()
        && frame[20] == ICMPV6
        && frame[ICMP_AT] == NEIGHBOUR_ADVERTISEMENT
        && frame[ICMP_AT + 8..ICMP_AT + 24] == target.octets()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solicitation_goes_to_the_solicited_node_group_with_a_valid_checksum() {
        let me = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 4);
        let target = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0x12, 0x3456);
        let frame = solicitation([2, 0, 0, 0, 0, 4], me, target);
        assert_eq!(&frame[..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        let group = solicited_node(target);
        assert_eq!(group, "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap());
        // Summing a message with its checksum in place gives zero.
        assert_eq!(checksum(me, group, &frame[ICMP_AT..]), 0);
        assert!(!advertises(&frame, target), "a solicitation is no advertisement");
    }
}
