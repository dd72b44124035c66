//! A balancer site in network namespaces: three `raftlb` nodes (lb1–lb3,
//! 198.18.0.1–3) forming one cluster that owns the VIP 198.18.0.100 (or
//! 2001:2::100, [`Site::start_v6`]), a backend host (198.18.0.5) served by
//! an in-process HTTP backend, and a client host (198.18.0.4, 2001:2::4)
//! that requests the VIP at a constant rate. Built on
//! [`Lab`](crate::netns::Lab); everything goes away on drop.

use crate::backends::HttpBackend;
use crate::netns::{self, Lab};
use crate::overlap_report::Balancer;
use crate::process::{Raftlb, TempDir, binary};
use crate::vip_load::request;
pub use crate::vip_load::{Attempt, Load, percentile};
use crate::wait;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub const BALANCERS: [&str; 3] = ["lb1", "lb2", "lb3"];
const HOSTS: [&str; 5] = ["lb1", "lb2", "lb3", "client", "backend"];
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
pub const CLUSTER: &str = "vip-test";

/// How a [`Site`] differs from the default one.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node that is a witness (`role = "witness"`), if one is.
    pub witness: Option<usize>,
    /// `placement = "spread"` VIPs instead of the one leader VIP.
    pub spread: Vec<IpAddr>,
    /// The leader's VIP ([`VIP`] or [`VIP6`]), which the client requests
    /// (with spread VIPs, the first of them).
    pub vip: IpAddr,
    /// `[cluster] vip_on_quorum_loss = "hold"` instead of the default.
    pub hold_on_quorum_loss: bool,
    /// Three backends (`b1`–`b3` on ports 80–82) instead of one, pool
    /// `app` sticky by header `X-Session`, and a second listener on 8081
    /// whose pool `sync` is the same with `contract = "sync"`.
    pub sticky: bool,
    /// `[cluster]` `heartbeat_interval` and `election_timeout` (e.g.
    /// `"50ms"`, `"150ms"`); `None`: `$RAFTLB_HEARTBEAT_INTERVAL` and
    /// `$RAFTLB_ELECTION_TIMEOUT` if set, else the defaults.
    pub raft_timing: Option<(String, String)>,
    /// The nodes' binary instead of [`binary()`], and variables added to
    /// their environment (a failpoints build and `RAFTLB_FAILPOINTS`).
    pub node_binary: Option<PathBuf>,
    pub node_env: Vec<(String, String)>,
    /// With `sticky`: both pools learn sessions from the backends'
    /// `JSESSIONID` cookie (`kind = "learn_cookie"`, set by `/login?id=…`)
    /// instead of the `X-Session` header.
    pub session_cookie: bool,
    /// A `tcp` listener on port 9000 too (pool `l4`: the same backends,
    /// not sticky), and the client's requests alternate between it and
    /// the `http` listener on 8080 (HTTP over an L4 proxy: the backend
    /// still logs each request's id).
    pub tcp: bool,
    /// Capture every frame on the bridge from before the first node starts
    /// ([`Site::capture`]).
    pub capture: bool,
    /// A `[gslb]` section: zone `gslb.test` on port 5353 of every node,
    /// `www.gslb.test` answered with the VIP (checked on its port 8080)
    /// while it serves, else with the client host (checked on its port 80).
    pub gslb: bool,
    /// Configuration appended to every balancer's file (listeners and
    /// pools of a test's own).
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            witness: None,
            spread: Vec::new(),
            vip: VIP.into(),
            hold_on_quorum_loss: false,
            sticky: false,
            raft_timing: None,
            node_binary: None,
            node_env: Vec::new(),
            session_cookie: false,
            tcp: false,
            capture: false,
            gslb: false,
            extra: String::new(),
        }
    }
}

#[derive(Debug)]
pub struct Site {
    pub lab: Lab,
    pub nodes: Vec<Raftlb>,
    options: Options,
    /// The VIP the client requests.
    pub vip: IpAddr,
    root: TempDir,
    backends: Vec<HttpBackend>,
    /// The client host's requests: a new connection every 5 ms, given up
    /// after 25 ms without a connection, so an outage shows at once.
    pub load: Load,
    /// Every frame on the bridge, with `Options::capture`.
    pub capture: Option<crate::capture::Capture>,
    /// The logs of processes [`Site::restart`] replaced, by balancer.
    past_logs: Vec<(usize, String)>,
}

impl Site {
    /// Builds the lab, starts the backend, the three nodes and the client,
    /// and waits until the VIP answers.
    pub async fn start() -> Site {
        Self::build(Options::default()).await
    }

    /// [`Site::start`] with node `witness` a witness: no listener, no VIP.
    pub async fn start_with(witness: Option<usize>) -> Site {
        Self::build(Options {
            witness,
            ..Options::default()
        })
        .await
    }

    /// [`Site::start`] with the IPv6 VIP [`VIP6`], on listeners bound to `[::]`.
    pub async fn start_v6() -> Site {
        Self::build(Options {
            vip: VIP6.into(),
            ..Options::default()
        })
        .await
    }

    /// [`Site::start`] with `spread` as `placement = "spread"` VIPs (the
    /// client requests the first) instead of the leader's.
    pub async fn start_spread(spread: Vec<IpAddr>) -> Site {
        Self::build(Options {
            vip: spread[0],
            spread,
            ..Options::default()
        })
        .await
    }

    pub async fn build(options: Options) -> Site {
        let lab = Lab::build(&HOSTS);
        let capture = options
            .capture
            .then(|| crate::capture::Capture::start(&lab.ns("sw")));
        let backend_address = lab.address("backend");
        let names: Vec<String> = match options.sticky {
            false => vec!["backend".to_string()],
            true => (1..=3).map(|i| format!("b{i}")).collect(),
        };
        let backends = names
            .iter()
            .zip(80u16..)
            .map(|(name, port)| {
                let listener = netns::on_host(&lab.ns("backend"), move || {
                    std::net::TcpListener::bind((backend_address, port)).expect("bind the backend")
                });
                HttpBackend::serve(name, listener)
            })
            .collect();
        let mut site = Site {
            lab,
            nodes: Vec::new(),
            vip: options.vip,
            options,
            root: TempDir::new("site"),
            backends,
            load: Load::idle(),
            capture,
            past_logs: Vec::new(),
        };
        for i in 0..BALANCERS.len() {
            let node = site.spawn(i);
            site.nodes.push(node);
        }
        for node in &mut site.nodes {
            node.ready(&[]).await;
        }
        let ports: &[u16] = if site.options.tcp { &[8080, 9000] } else { &[8080] };
        site.load = Load::start_on(
            &site.lab.ns("client"),
            site.vip,
            ports,
            Duration::from_millis(25),
            0,
        );
        let start = Instant::now();
        wait::value("the VIP answers", Duration::from_secs(10), || {
            site.answered_since(start)
        })
        .await;
        site
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("node{}", i + 1))
    }

    /// Starts node `i` (again) in its namespace, without waiting for it.
    pub fn spawn(&self, i: usize) -> Raftlb {
        self.spawn_as(i, &self.node_binary())
    }

    /// The binary the site starts its nodes from.
    pub fn node_binary(&self) -> PathBuf {
        self.options.node_binary.clone().unwrap_or_else(binary)
    }

    /// [`Site::spawn`] of the binary at `bin` (another version, say).
    pub fn spawn_as(&self, i: usize, bin: &std::path::Path) -> Raftlb {
        Raftlb::spawn_in_as(
            &self.lab.ns(BALANCERS[i]),
            &self.config(i),
            bin,
            &self.options.node_env,
        )
    }

    /// Replaces node `i`'s process in place with the binary at `bin`
    /// (`raftlb run --upgrade`): waits until the new process is ready and
    /// the old one has exited (each within `deadline`), and returns the
    /// old one's log. The new one logs to `log` in the node's directory.
    pub async fn upgrade_in_place(
        &mut self,
        i: usize,
        bin: &std::path::Path,
        log: &str,
        deadline: Duration,
    ) -> String {
        let successor =
            self.nodes[i].spawn_successor_in(&self.lab.ns(BALANCERS[i]), bin, &self.options.node_env, log);
        let mut old = std::mem::replace(&mut self.nodes[i], successor);
        self.nodes[i].ready(&[]).await;
        let status = old.wait_exit(deadline).await;
        assert!(
            status.success(),
            "node {}'s old process exited with {status}",
            i + 1
        );
        old.log()
    }

    /// Node `i`'s configuration file.
    pub fn config(&self, i: usize) -> String {
        let peers: Vec<String> = BALANCERS
            .iter()
            .enumerate()
            .map(|(n, h)| format!("{} = \"{}:7000\"", n + 1, self.lab.address(h)))
            .collect();
        let witness = self.options.witness == Some(i);
        // bench/failover.sh tunes Raft's clocks; the test suite keeps the defaults.
        let timing: String = match &self.options.raft_timing {
            Some((heartbeat, election)) => {
                format!("heartbeat_interval = \"{heartbeat}\"\nelection_timeout = \"{election}\"\n")
            }
            None => [
                ("heartbeat_interval", "RAFTLB_HEARTBEAT_INTERVAL"),
                ("election_timeout", "RAFTLB_ELECTION_TIMEOUT"),
            ]
            .iter()
            .filter_map(|(key, var)| std::env::var(var).ok().map(|v| format!("{key} = \"{v}\"\n")))
            .collect(),
        };
        let role = if witness { "witness" } else { "balancer" };
        let prefix = |v: &IpAddr| if v.is_ipv4() { 24 } else { 64 };
        let vip = if witness {
            String::new()
        } else if self.options.spread.is_empty() {
            let v = self.vip;
            format!(
                "[[vip]]\naddress = \"{v}/{}\"\ninterface = \"eth0\"\n",
                prefix(&v)
            )
        } else {
            self.options
                .spread
                .iter()
                .map(|v| {
                    format!(
                        "[[vip]]\naddress = \"{v}/{}\"\ninterface = \"eth0\"\nplacement = \"spread\"\n",
                        prefix(v)
                    )
                })
                .collect()
        };
        let policy = if self.options.hold_on_quorum_loss {
            "vip_on_quorum_loss = \"hold\"\n"
        } else {
            ""
        };
        // `[::]` takes IPv4 too (dual stack), but the IPv4 site keeps its
        // historical bind.
        let bind = if self.vip.is_ipv4() {
            "0.0.0.0:8080"
        } else {
            "[::]:8080"
        };
        let backend = self.lab.address("backend");
        let pools = match self.options.sticky {
            false => format!("[[pool]]\nname = \"app\"\nbackends = [{{ address = \"{backend}:80\" }}]\n\n"),
            true => {
                let list = format!(
                    "[{{ address = \"{backend}:80\" }}, {{ address = \"{backend}:81\" }}, {{ address = \"{backend}:82\" }}]"
                );
                let sticky = match self.options.session_cookie {
                    false => "[pool.sticky]\nkind = \"header\"\nname = \"X-Session\"\n",
                    true => "[pool.sticky]\nkind = \"learn_cookie\"\nname = \"JSESSIONID\"\n",
                };
                let sync_bind = bind.replace("8080", "8081");
                format!(
                    "[[pool]]\nname = \"app\"\nbackends = {list}\n\n{sticky}\n\
                     [[listener]]\nname = \"sync\"\nprotocol = \"http\"\nbind = \"{sync_bind}\"\npool = \"sync\"\n\n\
                     [[pool]]\nname = \"sync\"\nbackends = {list}\n\n{sticky}contract = \"sync\"\n\n"
                )
            }
        };
        let tcp = match self.options.tcp {
            false => String::new(),
            true => format!(
                "[[listener]]\nname = \"l4\"\nprotocol = \"tcp\"\nbind = \"{}\"\npool = \"l4\"\n\n\
                 [[pool]]\nname = \"l4\"\nbackends = [{}]\n\n",
                bind.replace("8080", "9000"),
                self.backends
                    .iter()
                    .map(|b| format!("{{ address = \"{backend}:{}\" }}", b.address.port()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let gslb = match self.options.gslb {
            false => String::new(),
            true => {
                let check = |port: u16| {
                    format!(
                        "check = {{ type = \"http\", port = {port}, path = \"/\", interval = \"200ms\", timeout = \"150ms\", fall = 2, rise = 1 }}"
                    )
                };
                format!(
                    "\n[gslb]\nbind = \"0.0.0.0:5353\"\nzone = \"gslb.test\"\nttl = \"1s\"\nns = [\"ns1.gslb.test\"]\n\n\
                     [[gslb.names]]\nname = \"www.gslb.test\"\n\n\
                     [[gslb.names.sites]]\nname = \"primary\"\naddress = \"{}\"\n{}\n\n\
                     [[gslb.names.sites]]\nname = \"secondary\"\naddress = \"{}\"\n{}\n",
                    self.vip,
                    check(8080),
                    self.lab.address("client"),
                    check(80)
                )
            }
        };
        format!(
            "[node]\nid = {id}\nrole = \"{role}\"\ndata_dir = \"{dir}\"\ndrain_timeout = \"1s\"\n\n\
             [cluster]\nid = \"{CLUSTER}\"\nraft = \"{me}:7000\"\npeers = {{ {peers} }}\n{timing}{policy}{tls}\n\
             [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\n\n\
             {pools}{tcp}{vip}{gslb}\n{extra}",
            id = i + 1,
            dir = self.data_dir(i).display(),
            me = self.lab.address(BALANCERS[i]),
            peers = peers.join(", "),
            tls = crate::pki::shared(CLUSTER).node_section(i as u64 + 1),
            extra = self.options.extra,
        )
    }

    /// The backends (`b1`–`b3` on ports 80–82 with `sticky`, else one on
    /// port 80), in port order.
    pub fn backends(&self) -> &[HttpBackend] {
        &self.backends
    }

    /// When the first request through the VIP that started after `since` got a 200.
    pub fn answered_since(&self, since: Instant) -> Option<Instant> {
        self.load.answered_since(since)
    }

    /// The balancers whose eth0 carries the VIP (a killed or frozen one
    /// keeps the address; its fence disowns it).
    pub fn holders(&self) -> Vec<usize> {
        self.holders_of(self.vip)
    }

    /// The client host's address in the VIP's family.
    pub fn client_address(&self) -> IpAddr {
        match self.vip {
            IpAddr::V4(_) => self.lab.address("client").into(),
            IpAddr::V6(_) => self.lab.address6("client").into(),
        }
    }

    /// The balancers whose eth0 carries `vip`.
    pub fn holders_of(&self, vip: IpAddr) -> Vec<usize> {
        (0..BALANCERS.len())
            .filter(|i| {
                let output = Command::new("ip")
                    .args(["-n", &self.lab.ns(BALANCERS[*i]), "addr", "show", "dev", "eth0"])
                    .output()
                    .expect("ip addr show");
                String::from_utf8_lossy(&output.stdout).contains(&format!(" {vip}/"))
            })
            .collect()
    }

    /// The one balancer holding the VIP; waits until there is exactly one.
    pub async fn owner(&self) -> usize {
        wait::value("exactly one VIP holder", Duration::from_secs(5), || {
            match self.holders().as_slice() {
                [one] => Some(*one),
                _ => None,
            }
        })
        .await
    }

    /// Starts node `i` again and waits until it has caught up with the leader.
    pub async fn restart(&mut self, i: usize) {
        self.past_logs.push((i, self.nodes[i].log()));
        self.nodes[i] = self.spawn(i);
        self.nodes[i].ready(&[]).await;
        // Ready means serving the state it had on disk; wait until it has
        // heard the current leader too.
        wait::value("the restarted node catches up", Duration::from_secs(10), || {
            self.caught_up(i).then_some(())
        })
        .await;
    }

    /// Each overlap named by balancer, beside what the balancers (earlier
    /// processes too) logged around it.
    pub fn explain(&self, overlaps: &[crate::arp::Overlap]) -> String {
        let balancers: Vec<Balancer<'_>> = BALANCERS
            .iter()
            .enumerate()
            .map(|(i, name)| Balancer {
                name,
                mac: crate::arp::mac_of(&self.lab.ns(name), "eth0"),
                logs: (self.past_logs.iter())
                    .filter(|(node, _)| *node == i)
                    .map(|(_, log)| log.clone())
                    .chain(self.nodes.get(i).map(Raftlb::log))
                    .collect(),
            })
            .collect();
        crate::overlap_report::explain(overlaps, &balancers)
    }

    /// Whether every member, as node `i` reports them, has applied the same index.
    pub fn caught_up(&self, i: usize) -> bool {
        let json = self.ctl(i, &["--json", "status"]);
        let applied: Vec<&str> = json
            .split("\"applied_index\":")
            .skip(1)
            .filter_map(|rest| rest.split([',', '}']).next())
            .map(str::trim)
            .collect();
        applied.len() == BALANCERS.len() && applied.iter().all(|a| *a == applied[0] && *a != "0")
    }

    /// The Raft leader's index, as node `i` reports it.
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let json = self.ctl(i, &["--json", "status"]);
        let id: usize = json
            .split("\"leader\":")
            .nth(1)?
            .split("\"id\":")
            .nth(1)?
            .split([',', '}'])
            .next()?
            .trim()
            .parse()
            .ok()?;
        id.checked_sub(1)
    }

    /// `raftlb ctl ARGS` against node `i`, run on node `i`'s host; its stdout.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        let node = format!("{}:7000", self.lab.address(BALANCERS[i]));
        let output = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns(BALANCERS[i])])
            .arg(binary())
            .args(["ctl", "--node", &node])
            .args(crate::pki::shared(CLUSTER).ctl_args("admin"))
            .args(args)
            .output()
            .expect("run raftlb ctl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The backend that answered `user`'s request (header `X-Session`) to
/// `to`, from namespace `ns`; `None` if it was not a 200.
pub fn session(ns: &str, to: SocketAddr, user: &str) -> Option<String> {
    let (ns, user) = (ns.to_string(), user.to_string());
    netns::on_host(&ns, move || {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_millis(200)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        let request =
            format!("GET / HTTP/1.1\r\nHost: vip\r\nX-Session: {user}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        if !answer.starts_with("HTTP/1.1 200") {
            return None;
        }
        answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
    })
}

/// One request from the client host to `to`; whether it got a 200.
pub fn get_from_client(site: &Site, to: SocketAddr) -> bool {
    netns::on_host(&site.lab.ns("client"), move || {
        request(to, Duration::from_millis(100), u64::MAX).0
    })
}

/// Sends `signal` (`"STOP"`, `"CONT"`, `"KILL"`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}
