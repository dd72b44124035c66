//! # raftlb-tests
//!
//! Shared fixtures for the integration tests in `tests/`: a real `raftlb`
//! process started from a TOML config ([`process`]), several forming a Raft
//! cluster on 127.0.0.N ([`cluster`]) and administered through their gRPC
//! API ([`admin`]) over mutual TLS with certificates made by `raftlb certs`
//! ([`pki`]), real backends on
//! loopback sockets ([`backends`]), an HTTP client ([`client`]), and
//! condition waits with deadlines ([`wait`]), and network namespaces for
//! multi-host tests ([`netns`], [`site`], with load through the VIP:
//! [`vip_load`]) with a prober of who answers
//! ARP or IPv6 neighbour solicitations for an address ([`arp`], [`ndp`]),
//! and a capture of every frame on their bridge ([`capture`]); clients as
//! source addresses ([`sources`]); the binary of an earlier commit, for
//! mixed-version clusters ([`pinned`]).
//! Nothing here is a mock.

pub mod admin;
pub mod arp;
pub mod backends;
pub mod capture;
pub mod client;
pub mod cluster;
pub mod failover;
pub mod h3;
pub mod nat;
pub mod ndp;
pub mod netns;
pub mod overlap_report;
pub mod pinned;
pub mod pki;
pub mod process;
pub mod site;
pub mod sources;
pub mod vip_load;
pub mod wait;

/// A TCP and UDP port free on 127.0.0.1, never the same twice in one test
/// process, and below Linux's ephemeral range (32768+), so no client socket
/// of a concurrently running test can be handed it by the kernel meanwhile.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + (offset + n) % SPAN) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port between {BASE} and {}", BASE + SPAN);
}

/// Whether `tool` is on the PATH. When it is not, the test says so on
/// stderr and is skipped — unless `RAFTLB_REQUIRE_TOOLS=1` (CI installs
/// every tool), where its absence fails the test.
pub fn tool_or_skip(test: &str, tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        assert!(
            std::env::var("RAFTLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{test}: `{tool}` is not installed and RAFTLB_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED {test}: `{tool}` is not installed");
    }
    found
}

/// Whether `python3` (the first on PATH) can import `module`, which
/// `pip install {module}` provides; skipped and failed as [`tool_or_skip`].
pub fn python_module_or_skip(test: &str, module: &str) -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("RAFTLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{test}: python3 cannot import {module} and RAFTLB_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED {test}: python3 cannot import {module} (pip install {module})");
    }
    found
}

/// Whether this test may do what needs root (mounts, namespaces). When it
/// may not, it says so on stderr, so a skipped test never passes silently;
/// under `RAFTLB_REQUIRE_TOOLS=1` (CI, which runs as root) it fails.
pub fn root_or_skip(test: &str, needs: &str) -> bool {
    let euid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_string))
    });
    let root = euid.as_deref() == Some("0");
    if !root {
        assert!(
            std::env::var("RAFTLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{test}: not root, and it needs root to {needs}; RAFTLB_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED {test}: not root, and it needs root to {needs}");
    }
    root
}
