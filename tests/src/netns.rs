//! A small network of Linux network namespaces, built by the test as root
//! and torn down on drop (even on panic): hosts on one Ethernet segment, a
//! bridge in a namespace of its own. Host N gets `eth0` with 198.18.0.N/24
//! (198.18.0.0/15 is reserved for benchmarking), no default route, and
//! nothing leaves the machine. The bridge lives outside the root namespace,
//! so a Docker engine's iptables FORWARD policy there never sees its
//! traffic, and no rule needs adding.
//!
//! Code runs "on" a host in two ways: a process started through
//! `ip netns exec`, or a thread of the test that enters the namespace
//! ([`on_host`]): sockets it creates stay in that namespace.
#![allow(unsafe_code)] // setns(2): std has no wrapper.

use std::net::Ipv4Addr;
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
    /// Hosts `names[0]` = 198.18.0.1, `names[1]` = 198.18.0.2, … on one bridge.
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
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let host = lab.ns(name);
            let port = format!("p{}", i + 1);
            let address = format!("{}/24", lab.address(name));
            ip(&["netns", "add", &host]);
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &host, "addr", "add", &address, "dev", "eth0"]);
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
