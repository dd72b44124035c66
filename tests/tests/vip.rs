//! The VIP in network namespaces: three balancers, a client and a backend
//! on one bridge. The Raft leader owns 198.18.0.100; a client in its own
//! namespace requests it at a constant rate while the owner is `kill -9`ed,
//! and the time from the kill to the first answer through the VIP is
//! measured. Needs root (namespaces); otherwise skips, saying so.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::netns::{self, Lab};
use raftlb_tests::process::{Raftlb, TempDir, binary};
use raftlb_tests::root_or_skip;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BALANCERS: [&str; 3] = ["lb1", "lb2", "lb3"];
const HOSTS: [&str; 5] = ["lb1", "lb2", "lb3", "client", "backend"];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const TRIALS: usize = 10;

fn config(lab: &Lab, root: &TempDir, id: usize) -> String {
    let peers: Vec<String> = BALANCERS
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{} = \"{}:7000\"", i + 1, lab.address(h)))
        .collect();
    format!(
        "[node]\nid = {id}\ndata_dir = \"{dir}\"\ndrain_timeout = \"1s\"\n\n\
         [cluster]\nid = \"vip-test\"\ntoken = \"t\"\nraft = \"{me}:7000\"\npeers = {{ {peers} }}\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:8080\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{backend}:80\" }}]\n\n\
         [[vip]]\naddress = \"{VIP}/24\"\ninterface = \"eth0\"\n",
        dir = root.path().join(format!("node{id}")).display(),
        me = lab.address(BALANCERS[id - 1]),
        peers = peers.join(", "),
        backend = lab.address("backend"),
    )
}

/// One request through the VIP: when it started, when it ended, whether it
/// got a 200.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    start: Instant,
    end: Instant,
    ok: bool,
}

fn request(to: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&to, Duration::from_millis(100)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

/// A client on its own host: a request every 5 ms until `stop`.
fn client(
    ns: String,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        netns::enter(&ns);
        let to = SocketAddr::from((VIP, 8080));
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let ok = request(to);
            let end = Instant::now();
            attempts
                .lock()
                .expect("attempts")
                .push(Attempt { start, end, ok });
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// The balancers whose eth0 carries the VIP (a killed one keeps it, fenced).
fn holders(lab: &Lab) -> Vec<usize> {
    (0..BALANCERS.len())
        .filter(|i| {
            let output = Command::new("ip")
                .args(["-n", &lab.ns(BALANCERS[*i]), "-4", "addr", "show", "dev", "eth0"])
                .output()
                .expect("ip addr show");
            String::from_utf8_lossy(&output.stdout).contains(&format!("{VIP}/"))
        })
        .collect()
}

/// The balancer holding the VIP, if exactly one does.
fn owner(lab: &Lab) -> Option<usize> {
    match holders(lab).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// Whether every member, as `host`'s admin API reports them, has applied
/// the same index.
fn caught_up(lab: &Lab, host: &str) -> bool {
    let output = Command::new("ip")
        .args(["netns", "exec", &lab.ns(host)])
        .arg(binary())
        .args(["ctl", "--node", &format!("{}:7000", lab.address(host))])
        .args(["--cluster", "vip-test", "--token", "t", "--json", "status"])
        .output()
        .expect("run raftlb ctl");
    let json = String::from_utf8_lossy(&output.stdout);
    let applied: Vec<&str> = json
        .split("\"applied_index\":")
        .skip(1)
        .filter_map(|rest| rest.split([',', '}']).next())
        .map(str::trim)
        .collect();
    applied.len() == BALANCERS.len() && applied.iter().all(|a| *a == applied[0] && *a != "0")
}

async fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vip_moves_when_its_owner_is_killed() {
    if !root_or_skip("VIP failover", "build network namespaces") {
        return;
    }
    let lab = Lab::build(&HOSTS);
    let root = TempDir::new("vip");
    let backend_address = lab.address("backend");
    let listener = netns::on_host(&lab.ns("backend"), move || {
        std::net::TcpListener::bind((backend_address, 80)).expect("bind the backend")
    });
    let _backend = HttpBackend::serve("backend", listener);
    let mut nodes: Vec<Raftlb> = (1..=3)
        .map(|id| Raftlb::spawn_in(&lab.ns(BALANCERS[id - 1]), &config(&lab, &root, id)))
        .collect();
    for node in &mut nodes {
        node.ready(&[]).await;
    }

    let attempts = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = client(lab.ns("client"), Arc::clone(&attempts), Arc::clone(&stop));
    let succeeded_since = |since: Instant| {
        let attempts = attempts.lock().expect("attempts");
        attempts.iter().find(|a| a.ok && a.start > since).map(|a| a.end)
    };

    let mut failovers = Vec::new();
    let mut up_since = Instant::now();
    for trial in 0..TRIALS {
        wait_for("the VIP answers", Duration::from_secs(10), || {
            succeeded_since(up_since)
        })
        .await;
        let victim = wait_for("exactly one VIP owner", Duration::from_secs(5), || owner(&lab)).await;
        let killed = Instant::now();
        nodes[victim].kill();
        let answered = wait_for(
            &format!("trial {trial}: an answer through the VIP after the kill"),
            Duration::from_secs(2),
            || succeeded_since(killed),
        )
        .await;
        failovers.push(answered - killed);
        let live_holders: Vec<usize> = holders(&lab).into_iter().filter(|h| *h != victim).collect();
        assert_eq!(
            live_holders.len(),
            1,
            "trial {trial}: live nodes holding the VIP: {live_holders:?}"
        );
        // The killed node comes back, clears the stale VIP it left, rejoins.
        nodes[victim] = Raftlb::spawn_in(&lab.ns(BALANCERS[victim]), &config(&lab, &root, victim + 1));
        nodes[victim].ready(&[]).await;
        // Ready means serving its last applied state, which it had on disk;
        // the next trial starts once it has heard the current leader too.
        wait_for("the restarted node catches up", Duration::from_secs(10), || {
            caught_up(&lab, BALANCERS[victim]).then_some(())
        })
        .await;
        up_since = Instant::now();
    }
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");

    failovers.sort();
    println!(
        "VIP failover after kill -9 of its owner: n={} p50={:?} p99={:?} max={:?}",
        failovers.len(),
        percentile(&failovers, 0.5),
        percentile(&failovers, 0.99),
        failovers[failovers.len() - 1]
    );
}
