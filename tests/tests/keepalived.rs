//! The bar raftlb's VIP failover is measured against: keepalived (VRRPv3,
//! unicast peers, `advert_int 0.1` as in `shared/reference/peers/ka-*.conf`
//! or `$KEEPALIVED_ADVERT_INT`, down to VRRPv3's 0.01 s; nginx behind it)
//! in the same kind of namespaces, with
//! the same client and the same ARP prober. Each trial kills every process
//! of the master's host with `kill -9` (the balancer dies, its kernel does
//! not), measures the time to the first answer through the VIP, and counts
//! how long both hosts answered ARP for it. Ignored: `bench/failover.sh`
//! runs it beside raftlb's own trials. Needs root, keepalived and nginx.

use raftlb_tests::arp::{self, ArpProbe};
use raftlb_tests::netns::Lab;
use raftlb_tests::process::TempDir;
use raftlb_tests::site::{Load, VIP, percentile};
use raftlb_tests::{root_or_skip, wait};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOSTS: [&str; 3] = ["ka1", "ka2", "client"];
const PROBE_EVERY: Duration = Duration::from_millis(5);

fn nginx_conf(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
           server {{ listen 8080; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
    )
}

/// Seconds between VRRP advertisements (`$KEEPALIVED_ADVERT_INT`, 0.1).
fn advert_int() -> String {
    std::env::var("KEEPALIVED_ADVERT_INT").unwrap_or_else(|_| "0.1".to_string())
}

fn keepalived_conf(me: &str, peer: &str, priority: u32) -> String {
    let advert_int = advert_int();
    format!(
        "global_defs {{\n  router_id {me}\n  vrrp_version 3\n  vrrp_garp_master_delay 1\n  vrrp_garp_master_repeat 3\n}}\n\
         vrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n  advert_int {advert_int}\n\
           unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n  virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n}}\n"
    )
}

/// nginx and keepalived on one host.
struct Balancer {
    ns: String,
    _dir: TempDir,
    processes: Vec<Child>,
}

impl Balancer {
    fn start(lab: &Lab, host: &str, peer: &str, priority: u32) -> Balancer {
        let dir = TempDir::new(host);
        let nginx = dir.write("nginx.conf", &nginx_conf(dir.path()));
        let me = lab.address(host).to_string();
        let keepalived = dir.write(
            "keepalived.conf",
            &keepalived_conf(&me, &lab.address(peer).to_string(), priority),
        );
        let ns = lab.ns(host);
        let spawn = |args: Vec<String>| {
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn a peer")
        };
        let d = dir.path().display().to_string();
        let processes = vec![
            spawn(vec![
                "nginx".into(),
                "-c".into(),
                nginx.display().to_string(),
                "-p".into(),
                d.clone(),
            ]),
            spawn(vec![
                "keepalived".into(),
                "-n".into(),
                "-l".into(),
                "-D".into(),
                "-P".into(),
                "-f".into(),
                keepalived.display().to_string(),
                "-p".into(),
                format!("{d}/keepalived.pid"),
                "-r".into(),
                format!("{d}/vrrp.pid"),
            ]),
        ];
        Balancer {
            ns,
            _dir: dir,
            processes,
        }
    }

    /// kill -9 of every process in the host's namespace: the balancer dies,
    /// its kernel (and the VIP on its interface) stays. Returns the moment
    /// the kill was sent (after listing the processes, which takes a while).
    fn crash(&mut self) -> Instant {
        let output = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .expect("ip netns pids");
        // Children first, in one call: keepalived's VRRP child would
        // otherwise get its parent-death signal and stop gracefully.
        let mut pids: Vec<u32> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.sort_unstable_by(|a, b| b.cmp(a));
        let at = Instant::now();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-9")
                .args(pids.iter().map(ToString::to_string))
                .status();
        }
        for child in &mut self.processes {
            let _ = child.wait();
        }
        self.processes.clear();
        at
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // A crashed one is already gone, and a replacement may run in the
        // same namespace now.
        if !self.processes.is_empty() {
            let _ = self.crash();
        }
    }
}

fn holders(lab: &Lab) -> Vec<usize> {
    (0..2)
        .filter(|i| {
            let output = Command::new("ip")
                .args(["-n", &lab.ns(HOSTS[*i]), "-4", "addr", "show", "dev", "eth0"])
                .output()
                .expect("ip addr show");
            String::from_utf8_lossy(&output.stdout).contains(&format!("{VIP}/"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a comparison, not a test of raftlb: bench/failover.sh runs it"]
async fn keepalived_failover_for_comparison() {
    if !root_or_skip("keepalived comparison", "build network namespaces") {
        return;
    }
    let trials: usize = std::env::var("RAFTLB_FAILOVER_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10);
    let lab = Lab::build(&HOSTS);
    let mut balancers = [
        Balancer::start(&lab, "ka1", "ka2", 150),
        Balancer::start(&lab, "ka2", "ka1", 100),
    ];
    let load = Load::start(&lab.ns("client"), VIP.into(), Duration::from_millis(25));
    let probe = ArpProbe::start(
        &lab.ns("client"),
        "eth0",
        lab.address("client").into(),
        VIP.into(),
        PROBE_EVERY,
    );
    let began = Instant::now();
    wait::value("keepalived's VIP answers", Duration::from_secs(10), || {
        load.answered_since(began)
    })
    .await;

    let mut failovers = Vec::new();
    let mut overlaps = Vec::new();
    for trial in 0..trials {
        let master = wait::value(
            &format!("trial {trial}: one VIP holder"),
            Duration::from_secs(5),
            || match holders(&lab).as_slice() {
                [one] => Some(*one),
                _ => None,
            },
        )
        .await;
        let before = probe.replies().len();
        let crashed = balancers[master].crash();
        let answered = wait::value(
            &format!("trial {trial}: an answer"),
            Duration::from_secs(5),
            || load.answered_since(crashed),
        )
        .await;
        failovers.push(answered - crashed);
        // The dead host's kernel keeps the VIP and answers ARP for it
        // until the host is rebooted; here, one second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        overlaps.push(arp::overlap(&probe.replies()[before..], PROBE_EVERY));
        // "Reboot": the VIP leaves with the kernel state, the services return.
        let _ = Command::new("ip")
            .args([
                "-n",
                &lab.ns(HOSTS[master]),
                "addr",
                "del",
                &format!("{VIP}/24"),
                "dev",
                "eth0",
            ])
            .status();
        let peer = HOSTS[1 - master];
        balancers[master] = Balancer::start(&lab, HOSTS[master], peer, if master == 0 { 150 } else { 100 });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    probe.finish();
    failovers.sort();
    overlaps.sort();
    println!(
        "keepalived (advert_int {}): kill -9 of the master's processes → answer via the VIP: n={} p50={:?} p99={:?} max={:?}; \
         ARP overlap per trial (dead kernel still answering, 1 s window): p50={:?} max={:?}",
        advert_int(),
        failovers.len(),
        percentile(&failovers, 0.5),
        percentile(&failovers, 0.99),
        failovers[failovers.len() - 1],
        percentile(&overlaps, 0.5),
        overlaps[overlaps.len() - 1]
    );
}
