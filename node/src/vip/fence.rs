//! The kernel-side fence: nftables rules that let this host claim a VIP
//! on the link (answer ARP or neighbour discovery for it), and accept
//! traffic to it, only while the VIP is an element of a lease set whose
//! elements expire by themselves. Each renewal re-adds the element with a
//! fresh timeout; a process that is killed, frozen or wedged stops
//! renewing, and within one lease its kernel stops claiming the address
//! even though the address is still configured.
//!
//! ```text
//! table arp raftlb  { output: arp saddr ip @lease accept;  arp saddr ip @vips drop }
//! table inet raftlb {
//!   input:  ip daddr @lease accept;   ip daddr @vips drop
//!           ip6 daddr @lease6 accept; ip6 daddr @vips6 drop
//!   output: neighbour advertisements whose target (@th,64,128) is in
//!           @lease6_target accept, in @vips6_target drop; neighbour
//!           solicitations and advertisements from ip6 saddr @lease6
//!           accept, from @vips6 drop
//! }
//! ```
//!
//! IPv6 neighbour discovery is ICMPv6 inside IPv6, so it passes the `inet`
//! output hook: the kernel's own advertisements for a VIP (sent from the
//! VIP, to answer a solicitation) and this process's unsolicited ones stop
//! when the lease lapses. The target is matched too, through a raw payload
//! set: nftables 1.0 has no ND-target expression to compare with an
//! `ipv6_addr` set. So an IPv6 lease is two elements, renewed together.
//!
//! A leader handing over on purpose (a transfer, a drain) first stops
//! taking new TCP connections on its VIPs (`closing`: a client's SYN is
//! dropped, and retransmitted to the new owner a second later) while the
//! requests already on them finish; the lease then runs out as ever. An
//! element of `closing` expires by itself, so a handover that fails leaves
//! the VIP taking connections again.
//!
//! The tables are created once at start (by `nft -f -`, replacing any a
//! previous run left), renewals go through netlink from the process.

use super::netlink::{self, Message, NETLINK_NETFILTER, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TABLE: &str = "raftlb";
const LEASE_SET: &str = "lease";
const LEASE6_SET: &str = "lease6";
/// VIPs whose owner takes no new TCP connection (a planned handover).
const CLOSING_SET: &str = "closing";
const CLOSING6_SET: &str = "closing6";
/// IPv6 leases again, keyed by the raw ND target field (`@th,64,128`).
const LEASE6_TARGET_SET: &str = "lease6_target";
/// A set in the `arp` table used once at start to check that this kernel
/// moves an element's expiry when it is added again.
const PROBE_SET: &str = "probe";

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
/// Deletes an element if it is there (Linux 6.3 and later).
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFPROTO_INET: u8 = 1;
const NFPROTO_ARP: u8 = 3;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

/// The two families with a `raftlb` table.
const FAMILIES: [u8; 2] = [NFPROTO_ARP, NFPROTO_INET];

/// The lease sets (family, set) holding `vip` while it is leased.
fn lease_sets(vip: IpAddr) -> [(u8, &'static str); 2] {
    match vip {
        IpAddr::V4(_) => [(NFPROTO_ARP, LEASE_SET), (NFPROTO_INET, LEASE_SET)],
        IpAddr::V6(_) => [(NFPROTO_INET, LEASE6_SET), (NFPROTO_INET, LEASE6_TARGET_SET)],
    }
}

/// `elements = { … }` of a set, or nothing for none (nft refuses `{ }`).
fn elements(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", items.join(", "))
    }
}

/// The ruleset fencing `vips`, replacing whatever a previous run left.
fn ruleset(vips: &[IpAddr]) -> String {
    let v4: Vec<String> = vips
        .iter()
        .filter(|v| v.is_ipv4())
        .map(ToString::to_string)
        .collect();
    let v6: Vec<String> = vips
        .iter()
        .filter(|v| v.is_ipv6())
        .map(ToString::to_string)
        .collect();
    // The raw payload set's elements are 128-bit integers.
    let v6_raw: Vec<String> = vips
        .iter()
        .filter_map(|v| match v {
            IpAddr::V6(v6) => Some(format!("0x{:032x}", u128::from(*v6))),
            IpAddr::V4(_) => None,
        })
        .collect();
    let (v4, v6, v6_raw) = (elements(&v4), elements(&v6), elements(&v6_raw));
    let nd = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }";
    let na_target = "icmpv6 type nd-neighbor-advert @th,64,128";
    let new_tcp = "tcp flags & (syn | ack) == syn";
    format!(
        "table arp {TABLE} {{}}\ndelete table arp {TABLE}\n\
         table arp {TABLE} {{\n\
           set {LEASE_SET} {{ type ipv4_addr; flags timeout; }}\n\
           set {PROBE_SET} {{ type ipv4_addr; flags timeout; }}\n\
           set vips {{ type ipv4_addr;{v4} }}\n\
           chain output {{ type filter hook output priority 0; policy accept;\n\
             arp saddr ip @{LEASE_SET} accept\n\
             arp saddr ip @vips drop\n\
           }}\n\
         }}\n\
         table inet {TABLE} {{}}\ndelete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
           set {LEASE_SET} {{ type ipv4_addr; flags timeout; }}\n\
           set vips {{ type ipv4_addr;{v4} }}\n\
           set {LEASE6_SET} {{ type ipv6_addr; flags timeout; }}\n\
           set vips6 {{ type ipv6_addr;{v6} }}\n\
           set {LEASE6_TARGET_SET} {{ typeof @th,64,128; flags timeout; }}\n\
           set vips6_target {{ typeof @th,64,128;{v6_raw} }}\n\
           set {CLOSING_SET} {{ type ipv4_addr; flags timeout; }}\n\
           set {CLOSING6_SET} {{ type ipv6_addr; flags timeout; }}\n\
           chain input {{ type filter hook input priority -150; policy accept;\n\
             ip daddr @{CLOSING_SET} {new_tcp} drop\n\
             ip6 daddr @{CLOSING6_SET} {new_tcp} drop\n\
             ip daddr @{LEASE_SET} accept\n\
             ip daddr @vips drop\n\
             ip6 daddr @{LEASE6_SET} accept\n\
             ip6 daddr @vips6 drop\n\
           }}\n\
           chain output {{ type filter hook output priority 0; policy accept;\n\
             {na_target} @{LEASE6_TARGET_SET} accept\n\
             {na_target} @vips6_target drop\n\
             {nd} ip6 saddr @{LEASE6_SET} accept\n\
             {nd} ip6 saddr @vips6 drop\n\
           }}\n\
         }}\n"
    )
}

/// Installs the fence for `vips` with no lease held: until [`renew`], this
/// host neither answers ARP or neighbour solicitations for them nor
/// accepts traffic to them.
pub fn install(vips: &[IpAddr]) -> io::Result<()> {
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run nft (is the nftables package installed?): {e}"),
            )
        })?;
    if let Some(mut stdin) = nft.stdin.take() {
        stdin.write_all(ruleset(vips).as_bytes())?;
    }
    let output = nft.wait_with_output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "nft refused the fence ruleset: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    check_expiry_refresh()
}

/// Renewal re-adds an element with a new timeout and expiration; kernels
/// before nftables learnt to update an existing element's expiry ignore
/// that, and the lease would lapse once per period. Refuse such a kernel
/// at start rather than flap the VIP: add a probe element for 10 s, add it
/// again for 10 min, and read back which expiry stuck.
fn check_expiry_refresh() -> io::Result<()> {
    let probe = Ipv4Addr::new(192, 0, 2, 1); // TEST-NET-1: never a VIP
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    for timeout in [Duration::from_secs(10), Duration::from_secs(600)] {
        let message = element_message(
            (NFPROTO_ARP, PROBE_SET),
            NFT_MSG_NEWSETELEM,
            flags,
            IpAddr::V4(probe),
            Some(timeout),
        );
        netlink::request(NETLINK_NETFILTER, batch([message]), &[])?;
    }
    let listed = Command::new("nft")
        .args(["list", "set", "arp", TABLE, PROBE_SET])
        .output()?;
    let text = String::from_utf8_lossy(&listed.stdout);
    // "elements = { 192.0.2.1 timeout 10m expires 9m59s… }": minutes left
    // mean the second add moved the expiry; seconds, that it did not.
    let minutes_left = text
        .split("expires ")
        .nth(1)
        .and_then(|rest| rest.split('m').next())
        .and_then(|minutes| minutes.parse::<u32>().ok());
    let refreshed = minutes_left.is_some_and(|m| m >= 5);
    if !refreshed {
        return Err(io::Error::other(format!(
            "this kernel does not refresh an nftables set element's expiry when it is added again, \
             so the VIP lease cannot be renewed (nft shows: {})",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        )));
    }
    Ok(())
}

fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

fn batch(messages: impl IntoIterator<Item = Message>) -> Vec<Message> {
    let edge = |kind| Message::new(kind, NLM_F_REQUEST).fixed(&nfgen(0, NFNL_SUBSYS_NFTABLES));
    let mut all = vec![edge(NFNL_MSG_BATCH_BEGIN)];
    all.extend(messages);
    all.push(edge(NFNL_MSG_BATCH_END));
    all
}

/// A message adding or deleting `vip` in `set` of table family `family`;
/// the key is the address's 4 or 16 bytes.
fn element_message(
    (family, set): (u8, &str),
    kind: u16,
    flags: u16,
    vip: IpAddr,
    timeout: Option<Duration>,
) -> Message {
    let key = match vip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut m = Message::new((NFNL_SUBSYS_NFTABLES << 8) | kind, flags)
        .fixed(&nfgen(family, 0))
        .attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE)
        .attr_str(NFTA_SET_ELEM_LIST_SET, set)
        .begin_nested(NFTA_SET_ELEM_LIST_ELEMENTS)
        .begin_nested(NFTA_LIST_ELEM)
        .begin_nested(NFTA_SET_ELEM_KEY)
        .attr(NFTA_DATA_VALUE, &key)
        .end_nested();
    if let Some(timeout) = timeout {
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        // Timeout and expiration both: re-adding an element that exists
        // only moves its expiry when the expiration is given.
        m = m
            .attr(NFTA_SET_ELEM_TIMEOUT, &millis.to_be_bytes())
            .attr(NFTA_SET_ELEM_EXPIRATION, &millis.to_be_bytes());
    }
    m.end_nested().end_nested()
}

/// Grants this host `vips` for `lease` from now, in one transaction.
pub fn renew(vips: &[IpAddr], lease: Duration) -> io::Result<()> {
    add_for(vips, |vip| lease_sets(vip).to_vec(), lease)
}

/// Stops this host taking new TCP connections on `vips` for `lasting`
/// (a planned handover: see the module doc); established ones go on.
pub fn close_to_new_connections(vips: &[IpAddr], lasting: Duration) -> io::Result<()> {
    add_for(
        vips,
        |vip| match vip {
            IpAddr::V4(_) => vec![(NFPROTO_INET, CLOSING_SET)],
            IpAddr::V6(_) => vec![(NFPROTO_INET, CLOSING6_SET)],
        },
        lasting,
    )
}

/// Adds each of `vips` to its sets (`sets_of`) for `lasting` from now, in
/// one transaction (an element there already gets the new expiry).
fn add_for(
    vips: &[IpAddr],
    sets_of: impl Fn(IpAddr) -> Vec<(u8, &'static str)>,
    lasting: Duration,
) -> io::Result<()> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    let messages = vips.iter().flat_map(|vip| {
        sets_of(*vip)
            .into_iter()
            .map(move |set| element_message(set, NFT_MSG_NEWSETELEM, flags, *vip, Some(lasting)))
    });
    netlink::request(NETLINK_NETFILTER, batch(messages), &[])
}

/// Withdraws the lease on `vips` now (absent elements are fine).
///
/// In one transaction that removes whichever elements are there (destroy,
/// Linux 6.3 on). A delete of an absent element (one that expired) fails
/// its transaction, and the kernel's abort waits for an RCU grace period,
/// tens of milliseconds that would stall the control runtime; so delete,
/// one transaction per element, only where destroy is unknown.
pub fn revoke(vips: &[IpAddr]) -> io::Result<()> {
    static DESTROY_UNKNOWN: AtomicBool = AtomicBool::new(false);
    if !DESTROY_UNKNOWN.load(Ordering::Relaxed) {
        let messages = vips.iter().flat_map(|vip| {
            lease_sets(*vip).into_iter().map(move |set| {
                element_message(set, NFT_MSG_DESTROYSETELEM, NLM_F_REQUEST | NLM_F_ACK, *vip, None)
            })
        });
        match netlink::request(NETLINK_NETFILTER, batch(messages), &[]) {
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                DESTROY_UNKNOWN.store(true, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    // One transaction per element: a missing one must not abort the rest.
    let mut result = Ok(());
    for vip in vips {
        for set in lease_sets(*vip) {
            let message = element_message(set, NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, *vip, None);
            let outcome = netlink::request(NETLINK_NETFILTER, batch([message]), &[libc::ENOENT]);
            if result.is_ok() {
                result = outcome;
            }
        }
    }
    result
}

/// Removes the fence tables (at shutdown, after the addresses are gone).
pub fn remove() -> io::Result<()> {
    let messages = FAMILIES.iter().map(|family| {
        Message::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .fixed(&nfgen(*family, 0))
        .attr_str(NFTA_TABLE_NAME, TABLE)
    });
    netlink::request(NETLINK_NETFILTER, batch(messages), &[libc::ENOENT])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_lists_each_family_in_its_sets_and_leaves_empty_sets_empty() {
        let v6: IpAddr = "2001:2::100".parse().unwrap();
        let only_v6 = ruleset(&[v6]);
        assert!(only_v6.contains("set vips6 { type ipv6_addr; elements = { 2001:2::100 }; }"));
        assert!(only_v6.contains("elements = { 0x20010002000000000000000000000100 }"));
        assert!(only_v6.contains("set vips { type ipv4_addr; }"), "{only_v6}");
        let v4: IpAddr = "198.18.0.100".parse().unwrap();
        let both = ruleset(&[v4, v6]);
        assert!(both.contains("set vips { type ipv4_addr; elements = { 198.18.0.100 }; }"));
        assert!(!both.contains("{  }"));
        assert!(both.contains("ip daddr @closing tcp flags & (syn | ack) == syn drop"));
    }

    #[test]
    fn an_ipv6_lease_is_two_inet_elements_keyed_by_sixteen_bytes() {
        let v6: IpAddr = "2001:2::100".parse().unwrap();
        assert_eq!(
            lease_sets(v6),
            [(NFPROTO_INET, LEASE6_SET), (NFPROTO_INET, LEASE6_TARGET_SET)]
        );
        let message = element_message(lease_sets(v6)[0], NFT_MSG_NEWSETELEM, 0, v6, None);
        let bytes = message.bytes();
        let key = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(
            bytes.windows(16).any(|w| w == key),
            "the 16-byte key is in the message"
        );
    }
}
