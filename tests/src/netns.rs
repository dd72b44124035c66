//! A small network of Linux network namespaces, built by the test as root
//! and torn down on drop (even on panic): hosts on one Ethernet segment, a
//! bridge in a namespace of its own. Host N gets `eth0` with 198.18.0.N/24
//! and 2001:2::N/64 (198.18.0.0/15 and 2001:2::/48 are reserved for
//! benchmarking, RFC 2544 and RFC 5180), no default route, and nothing
//! leaves the machine. Duplicate address detection is off in every
//! namespace (`accept_dad = 0`), so IPv6 addresses are usable at once, and
//! the bridge floods multicast (no MLD snooping), so neighbour
//! solicitations reach every host whatever group reports it saw. The bridge lives outside the root namespace,
//! so a Docker engine's iptables FORWARD policy there never sees its
//! traffic, and no rule needs adding.
//!
//! Code runs "on" a host in two ways: a process started through
//! `ip netns exec`, or a thread of the test that enters the namespace
//! ([`on_host`]): sockets it creates stay in that namespace.
#![allow(unsafe_code)] // setns(2): std has no wrapper.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Mutex;

/// One lab at a time per test process: namespaces and addresses are named
/// by the process, so two labs in one process would collide.
static ONE_LAB: Mutex<()> = Mutex::new(());

/// The lab: namespaces `rlb<pid>-<host>` and `rlb<pid>-sw` (the bridge).
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    hosts: Vec<String>,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// Turns duplicate address detection off in namespace `ns`, for the
/// interfaces there and those moved in later.
fn no_dad(ns: &str) {
    let output = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw"])
        .args([
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ])
        .output()
        .expect("run sysctl");
    assert!(
        output.status.success(),
        "sysctl accept_dad in {ns}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

impl Lab {
    /// Hosts `names[0]` = 198.18.0.1 and 2001:2::1, `names[1]` = 198.18.0.2
    /// and 2001:2::2, … on one bridge.
    pub fn build(names: &[&str]) -> Lab {
        let guard = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
        let lab = Lab {
            prefix: format!("rlb{}-", std::process::id()),
            hosts: names.iter().map(|n| (*n).to_string()).collect(),
            _one_at_a_time: guard,
        };
        lab.teardown(); // leftovers of a crashed run with the same pid
        let switch = lab.ns("sw");
        ip(&["netns", "add", &switch]);
        no_dad(&switch);
        ip(&[
            "-n",
            &switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let host = lab.ns(name);
            let port = format!("p{}", i + 1);
            let address = format!("{}/24", lab.address(name));
            let address6 = format!("{}/64", lab.address6(name));
            ip(&["netns", "add", &host]);
            no_dad(&host);
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &host, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &host, "addr", "add", &address6, "dev", "eth0", "nodad"]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
            ip(&["-n", &host, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// The namespace of host `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Host `name`'s address.
    pub fn address(&self, name: &str) -> Ipv4Addr {
        let i = self
            .hosts
            .iter()
            .position(|h| h == name)
            .expect("a host of this lab");
        Ipv4Addr::new(198, 18, 0, u8::try_from(i + 1).expect("fewer than 255 hosts"))
    }

    /// Host `name`'s IPv6 address.
    pub fn address6(&self, name: &str) -> Ipv6Addr {
        let [.., n] = self.address(name).octets();
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, n.into())
    }

    /// The MAC address of host `name`'s `eth0`.
    pub fn mac(&self, name: &str) -> [u8; 6] {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(name),
                "cat",
                "/sys/class/net/eth0/address",
            ])
            .output()
            .expect("run ip netns exec");
        let text = String::from_utf8_lossy(&output.stdout);
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .filter_map(|b| u8::from_str_radix(b, 16).ok())
            .collect();
        bytes
            .try_into()
            .unwrap_or_else(|_| panic!("the MAC of {name}'s eth0: {:?}", text.trim()))
    }

    fn teardown(&self) {
        for name in self.hosts.iter().map(String::as_str).chain(["sw"]) {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(name)]).output();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Moves the calling thread into namespace `ns` for good.
pub fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
    // SAFETY: a valid namespace descriptor; affects this thread only.
    let done = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(done, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Runs `work` on a fresh thread inside namespace `ns` and returns its
/// result: sockets it creates belong to that namespace.
pub fn on_host<T: Send + 'static>(ns: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        work()
    })
    .join()
    .expect("thread in namespace")
}

/// Loads nftables `rules` (an `nft -f` script) inside namespace `ns`.
pub fn nft(ns: &str, rules: &str) {
    use std::io::Write;
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    nft.stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("write the rules");
    assert!(nft.wait().expect("nft").success(), "nft in {ns}: {rules}");
}
