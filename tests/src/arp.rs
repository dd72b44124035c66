//! Who answers for an address, seen from one host: a prober that asks
//! every few milliseconds on a raw packet socket (ARP for IPv4, a neighbour
//! solicitation for IPv6, see [`crate::ndp`]) and records every answer
//! (ARP reply, neighbour advertisement) with its sender's MAC on the
//! monotonic clock (all namespaces share it). Two different MACs answering
//! the same round of questions is two hosts claiming one address at once:
//! the overlap a VIP must never have.
#![allow(unsafe_code)] // AF_PACKET sockets: std has none.

use crate::ndp;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ETH_P_ARP: u16 = 0x0806;

/// One ARP reply for the probed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub at: Instant,
    pub mac: [u8; 6],
}

/// A running prober; [`ArpProbe::finish`] stops it and returns what it saw.
#[derive(Debug)]
pub struct ArpProbe {
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Reply>>>,
    asking: std::thread::JoinHandle<()>,
    listening: std::thread::JoinHandle<()>,
}

/// A raw packet socket for `ethertype` (`ETH_P_ALL`: every frame).
pub(crate) fn packet_socket(ethertype: u16) -> OwnedFd {
    let protocol = i32::from(ethertype.to_be());
    // SAFETY: plain socket(2); owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Interface `name`'s MAC in namespace `ns`.
pub fn mac_of(ns: &str, name: &str) -> [u8; 6] {
    link(ns, name).1
}

/// Interface `name`'s index and MAC in namespace `ns`, from `ip` (sysfs
/// shows the root namespace to a thread that merely entered another).
fn link(ns: &str, name: &str) -> (i32, [u8; 6]) {
    let output = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", name])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&output.stdout);
    let index = text.split(':').next().and_then(|i| i.trim().parse().ok());
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(|m| {
            let mut mac = [0u8; 6];
            for (byte, part) in mac.iter_mut().zip(m.split(':')) {
                *byte = u8::from_str_radix(part, 16).expect("MAC byte");
            }
            mac
        });
    match (index, mac) {
        (Some(index), Some(mac)) => (index, mac),
        _ => panic!("no Ethernet link {name} in {ns}: {text}"),
    }
}

fn who_has(mac: [u8; 6], me: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&me.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// Whether a frame answers for the probed address.
type Answers = Box<dyn Fn(&[u8]) -> bool + Send>;

/// Whether `frame` is an ARP reply from `target`.
fn arp_reply(frame: &[u8], target: Ipv4Addr) -> bool {
    frame.len() >= 42
        && frame[12..14] == ETH_P_ARP.to_be_bytes()
        && frame[20..22] == [0, 2]
        && frame[28..32] == target.octets()
}

impl ArpProbe {
    /// Starts asking who has `target` every `every` from `me` (of the same
    /// family) on `interface` of namespace `ns`, and recording the answers:
    /// ARP for IPv4, neighbour discovery for IPv6.
    pub fn start(ns: &str, interface: &str, me: IpAddr, target: IpAddr, every: Duration) -> ArpProbe {
        let (index, mac) = link(ns, interface);
        let (ethertype, destination, question, answers): (u16, [u8; 6], Vec<u8>, Answers) = match (me, target)
        {
            (IpAddr::V4(me), IpAddr::V4(target)) => (
                ETH_P_ARP,
                [0xff; 6],
                who_has(mac, me, target),
                Box::new(move |frame| arp_reply(frame, target)),
            ),
            (IpAddr::V6(me), IpAddr::V6(target)) => (
                ndp::ETH_P_IPV6,
                ndp::solicitation_destination(target),
                ndp::solicitation(mac, me, target),
                Box::new(move |frame| ndp::advertises(frame, target)),
            ),
            _ => panic!("probing {target} from {me}: not one family"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let (ns_l, stop_l, replies_l) = (ns.to_string(), Arc::clone(&stop), Arc::clone(&replies));
        let listening = std::thread::spawn(move || {
            crate::netns::enter(&ns_l);
            listen(index, ethertype, &*answers, &stop_l, &replies_l);
        });
        let (ns_a, stop_a) = (ns.to_string(), Arc::clone(&stop));
        let asking = std::thread::spawn(move || {
            crate::netns::enter(&ns_a);
            ask(index, ethertype, destination, question, every, &stop_a);
        });
        ArpProbe {
            stop,
            replies,
            asking,
            listening,
        }
    }

    /// Replies so far.
    pub fn replies(&self) -> Vec<Reply> {
        self.replies.lock().expect("replies").clone()
    }

    /// Stops probing and returns every reply, in order.
    pub fn finish(self) -> Vec<Reply> {
        self.stop.store(true, Ordering::Relaxed);
        self.asking.join().expect("asking thread");
        self.listening.join().expect("listening thread");
        self.replies.lock().expect("replies").clone()
    }
}

/// Makes a blocking receive on `socket` give up after 50 ms, so a reader
/// looks at its stop flag that often.
pub(crate) fn receive_for_at_most_50ms(socket: &OwnedFd) {
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: a valid timeval of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

fn ask(index: i32, ethertype: u16, destination: [u8; 6], frame: Vec<u8>, every: Duration, stop: &AtomicBool) {
    let socket = packet_socket(ethertype);
    // SAFETY: a zeroed sockaddr_ll, filled in below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ethertype.to_be();
    to.sll_ifindex = index;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&destination);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the frame and address outlive the call.
        unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
        }
        std::thread::sleep(every);
    }
}

fn listen(
    index: i32,
    ethertype: u16,
    answers: &(dyn Fn(&[u8]) -> bool + Send),
    stop: &AtomicBool,
    replies: &Mutex<Vec<Reply>>,
) {
    let socket = packet_socket(ethertype);
    receive_for_at_most_50ms(&socket);
    let mut frame = [0u8; 1600];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: a zeroed sockaddr_ll the kernel fills in.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buffers valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                frame.as_mut_ptr().cast(),
                frame.len(),
                0,
                (&raw mut from).cast(),
                &raw mut len,
            )
        };
        let at = Instant::now();
        let Ok(n) = usize::try_from(n) else { continue };
        if from.sll_ifindex != index || !answers(&frame[..n]) {
            continue;
        }
        // The Ethernet source: for ARP the same as the sender MAC.
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&frame[6..12]);
        replies.lock().expect("replies").push(Reply { at, mac });
    }
}

/// When each MAC answered: runs of replies no more than three probe
/// periods apart, each held until one period after its last reply.
pub fn claims(replies: &[Reply], every: Duration) -> Vec<([u8; 6], Instant, Instant)> {
    let mut claims: Vec<([u8; 6], Instant, Instant)> = Vec::new();
    for reply in replies {
        let open = claims
            .iter_mut()
            .rev()
            .find(|(mac, _, end)| *mac == reply.mac && reply.at <= *end + every * 2);
        match open {
            Some((_, _, end)) => *end = (*end).max(reply.at + every),
            None => claims.push((reply.mac, reply.at, reply.at + every)),
        }
    }
    claims
}

/// A time when two hosts (`macs`) both answered for the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    pub macs: [[u8; 6]; 2],
    pub from: Instant,
    pub to: Instant,
}

/// Every intersection of claims by different MACs.
pub fn overlaps(replies: &[Reply], every: Duration) -> Vec<Overlap> {
    let claims = claims(replies, every);
    let mut found = Vec::new();
    for (i, (mac_a, start_a, end_a)) in claims.iter().enumerate() {
        for (mac_b, start_b, end_b) in &claims[i + 1..] {
            let (from, to) = ((*start_a).max(*start_b), (*end_a).min(*end_b));
            if mac_a != mac_b && from < to {
                found.push(Overlap {
                    macs: [*mac_a, *mac_b],
                    from,
                    to,
                });
            }
        }
    }
    found
}

/// How long two hosts answered for the address at once: the summed
/// intersection of claims by different MACs. A handover (one host stops,
/// another starts later) is zero; two hosts answering the same question, or
/// taking turns, is not.
pub fn overlap(replies: &[Reply], every: Duration) -> Duration {
    overlaps(replies, every).iter().map(|o| o.to - o.from).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(script: &[(u64, u8)]) -> Vec<Reply> {
        let zero = Instant::now();
        script
            .iter()
            .map(|(ms, host)| Reply {
                at: zero + Duration::from_millis(*ms),
                mac: [2, 0, 0, 0, 0, *host],
            })
            .collect()
    }

    #[test]
    fn a_handover_is_no_overlap_and_taking_turns_is() {
        let every = Duration::from_millis(5);
        let handover = replies(&[(0, 1), (5, 1), (10, 1), (500, 2), (505, 2)]);
        assert_eq!(overlap(&handover, every), Duration::ZERO);
        let same_question = replies(&[(0, 1), (5, 1), (5, 2), (10, 1), (10, 2)]);
        assert!(overlap(&same_question, every) >= Duration::from_millis(5));
        let turns = replies(&[(0, 1), (5, 2), (10, 1), (15, 2)]);
        assert!(overlap(&turns, every) >= Duration::from_millis(10));
    }
}
