//! DNS discovery against a real DNS server: Debian's `dnsmasq`, started
//! here on 127.0.0.20 and serving a zone the test changes (its
//! `--addn-hosts` file, re-read on SIGHUP). A 3-node cluster resolves
//! `app.test` (A records) and `_web._tcp.test` (SRV, weights 1 and 3):
//! scaling the name 2 → 5 → 2 reaches every node's pool within two
//! intervals with no failed request under load; the SRV weights give the
//! traffic shares; killing the resolver changes nothing; NXDOMAIN empties
//! the set only after `nxdomain_hold`; and every node reports the same log
//! index for each change.

use raftlb_config::ClusterState;
use raftlb_config::discovery::DiscoveryFailure;
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client::{self, HttpClient};
use raftlb_tests::cluster::Cluster;
use raftlb_tests::process::TempDir;
use raftlb_tests::{free_port, tool_or_skip, wait};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The discovery interval of both pools.
const INTERVAL: Duration = Duration::from_secs(2);
const DNS_IP: &str = "127.0.0.20";
/// The app pool's `nxdomain_hold`.
const NXDOMAIN_HOLD: Duration = Duration::from_secs(4);

/// A dnsmasq answering `*.test` from a hosts file (NXDOMAIN for other
/// names of the zone) and two SRV records; killed when dropped.
struct Dnsmasq {
    child: Child,
    hosts: std::path::PathBuf,
}

impl Dnsmasq {
    /// Starts it answering `apps` for `app.test`, and waits until it has
    /// read its hosts file (a SIGHUP before that would kill it).
    async fn start(dir: &TempDir, port: u16, backend_port: u16, apps: &[u8]) -> Dnsmasq {
        let hosts = dir.write("hosts", &hosts(apps));
        let log = dir.path().join("dnsmasq.log");
        let _ = std::fs::remove_file(&log);
        let mut command = Command::new("dnsmasq");
        command.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--conf-file=/dev/null",
            "--pid-file",
            "--local=/test/",
            "--local-ttl=1",
            &format!("--log-facility={}", log.display()),
            &format!("--port={port}"),
            &format!("--listen-address={DNS_IP}"),
            &format!("--addn-hosts={}", hosts.display()),
            &format!("--srv-host=_web._tcp.test,s1.test,{backend_port},0,1"),
            &format!("--srv-host=_web._tcp.test,s2.test,{backend_port},0,3"),
        ]);
        // As root it would become `nobody`, who cannot read our temp dir.
        if is_root() {
            command.arg("--user=root");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        wait::until("dnsmasq reading its hosts file", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains("read "))
        })
        .await;
        Dnsmasq { child, hosts }
    }

    /// Makes `app.test` answer `apps` (127.0.0.1x); the SRV targets stay.
    fn serve(&self, apps: &[u8]) {
        std::fs::write(&self.hosts, hosts(apps)).expect("write hosts");
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "SIGHUP dnsmasq");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hosts file: `app.test` at 127.0.0.{each of apps}, the SRV targets.
fn hosts(apps: &[u8]) -> String {
    let mut text = String::from("127.0.0.21 s1.test\n127.0.0.22 s2.test\n");
    for last in apps {
        text.push_str(&format!("127.0.0.{last} app.test\n"));
    }
    text
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

fn seed(dns_port: u16, srv_port: u16, backend_port: u16) -> String {
    let resolvers = format!("resolvers = [\"{DNS_IP}:{dns_port}\"], interval = \"2s\", timeout = \"500ms\"");
    format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{{HTTP}}\"\npool = \"app\"\n\n\
         [[listener]]\nname = \"weighted\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{srv_port}\"\npool = \"srv\"\n\n\
         [[pool]]\nname = \"app\"\nalgorithm = \"round_robin\"\nslow_start = \"1s\"\n\
         discovery = {{ name = \"app.test\", port = {backend_port}, nxdomain_hold = \"4s\", {resolvers} }}\n\n\
         [[pool]]\nname = \"srv\"\nalgorithm = \"weighted_round_robin\"\n\
         discovery = {{ name = \"_web._tcp.test\", type = \"SRV\", {resolvers} }}\n"
    )
}

/// What node `index` holds of `pool`: its discovered backends (address →
/// weight), the number of changes and the log index of the last.
type Seen = (BTreeMap<SocketAddr, u32>, u64, u64);

fn seen(state: &ClusterState, pool: &str) -> Option<Seen> {
    let pool = state.spec().pool(pool)?;
    let set = pool
        .backends
        .iter()
        .filter(|b| b.discovered)
        .map(|b| (b.address, b.weight))
        .collect();
    let status = &pool.discovery_status;
    Some((set, status.changes, status.changed_at))
}

/// Every node's view of `pool`, read from its own copy (stale reads).
async fn every_node(cluster: &Cluster, pool: &str) -> Vec<Option<Seen>> {
    let mut all = Vec::new();
    for i in 0..cluster.members.len() {
        let mut admin = cluster.admin(i, Duration::from_millis(500));
        all.push(
            admin
                .read(true)
                .await
                .ok()
                .and_then(|(state, _)| seen(&state, pool)),
        );
    }
    all
}

/// Waits until every node holds exactly `addresses` in `pool`; returns
/// the common view.
async fn wait_everywhere(
    cluster: &Cluster,
    pool: &str,
    addresses: &[SocketAddr],
    deadline: Duration,
) -> Seen {
    let want: Vec<SocketAddr> = addresses.to_vec();
    wait::value_of(
        &format!("every node's pool {pool} = {want:?}"),
        deadline,
        || async {
            let all = every_node(cluster, pool).await;
            let first = all.first()?.clone()?;
            let same = all.iter().all(|s| s.as_ref() == Some(&first));
            (same && first.0.keys().copied().collect::<Vec<_>>() == want).then_some(first)
        },
    )
    .await
}

fn at(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], port))
}

/// GETs `/` on the nodes in turn until `stop`, counting answers and failures.
fn load(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (ok2, failed2) = (Arc::clone(&ok), Arc::clone(&failed));
    let task = tokio::spawn(async move {
        let http: HttpClient = client::http1();
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let url = &urls[n % urls.len()];
            n += 1;
            match client::try_get(&http, url).await {
                Ok((200, _)) => ok2.fetch_add(1, Ordering::SeqCst),
                other => {
                    eprintln!("failed request to {url}: {other:?}");
                    failed2.fetch_add(1, Ordering::SeqCst)
                }
            };
        }
    });
    (ok, failed, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_follows_dns_on_every_node_at_one_index() {
    if !tool_or_skip("discovery", "dnsmasq") {
        return;
    }
    let dir = TempDir::new("discovery");
    let (dns_port, srv_port, backend_port) = (free_port(), free_port(), free_port());
    // Backends at different addresses on one port: app.test's and the SRV targets.
    let mut backends = Vec::new();
    for last in [11u8, 12, 13, 14, 15, 21, 22] {
        let listener = std::net::TcpListener::bind(at(last, backend_port)).expect("bind backend");
        backends.push((last, HttpBackend::serve(&format!("b{last}"), listener)));
    }
    let mut dns = Dnsmasq::start(&dir, dns_port, backend_port, &[11, 12]).await;
    let cluster = Cluster::start(3, &seed(dns_port, srv_port, backend_port)).await;

    let two = [at(11, backend_port), at(12, backend_port)];
    let before = wait_everywhere(&cluster, "app", &two, Duration::from_secs(60)).await;

    // 2 → 5 → 2 under load: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("http://{}/", m.http))
        .collect();
    let (ok, failed, loader) = load(urls, Arc::clone(&stop));
    wait::until("load running", Duration::from_secs(10), || {
        ok.load(Ordering::SeqCst) > 50
    })
    .await;

    let five: Vec<SocketAddr> = [11, 12, 13, 14, 15].map(|l| at(l, backend_port)).to_vec();
    let started = Instant::now();
    dns.serve(&[11, 12, 13, 14, 15]);
    let up = wait_everywhere(&cluster, "app", &five, 2 * INTERVAL).await;
    eprintln!("2 → 5 on every node after {:?}", started.elapsed());
    assert_eq!(up.1, before.1 + 1, "one change, one command");
    assert!(up.2 > before.2, "a later log index");
    wait::until("each of the 5 backends serving", Duration::from_secs(20), || {
        backends
            .iter()
            .filter(|(l, _)| *l < 20)
            .all(|(_, b)| b.served() > 0)
    })
    .await;

    let started = Instant::now();
    dns.serve(&[11, 12]);
    let down = wait_everywhere(&cluster, "app", &two, 2 * INTERVAL).await;
    eprintln!("5 → 2 on every node after {:?}", started.elapsed());
    assert_eq!(down.1, up.1 + 1);
    // Requests keep flowing after the change; then the load stops.
    let after = ok.load(Ordering::SeqCst);
    wait::until("requests after 5 → 2", Duration::from_secs(10), || {
        ok.load(Ordering::SeqCst) > after + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    loader.await.expect("load task");
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("load: {ok} answered, {failed} failed");
    assert_eq!(failed, 0, "no failed request while the set changed");

    // The same change at the same log index on every node, as `ctl pools --json` shows it.
    let mut indexes = Vec::new();
    for i in 0..cluster.members.len() {
        let (status, out, err) = cluster.ctl(i, &["--json", "pools", "app", "--stale"]);
        assert!(status.success(), "ctl pools: {err}");
        let json: serde_json::Value = serde_json::from_str(&out).expect("json");
        let changed_at = json["discovery_status"]["changed_at"]
            .as_u64()
            .expect("changed_at");
        indexes.push((changed_at, json["discovery_status"]["changes"].as_u64()));
    }
    eprintln!("(changed_at, changes) per node: {indexes:?}");
    assert!(
        indexes.iter().all(|x| *x == (down.2, Some(down.1))),
        "{indexes:?}"
    );

    // SRV: weights 1 and 3 give 25 % and 75 % of the requests (± 5 %).
    let srv = [at(21, backend_port), at(22, backend_port)];
    let weighted = wait_everywhere(&cluster, "srv", &srv, Duration::from_secs(20)).await;
    assert_eq!(weighted.0.values().copied().collect::<Vec<_>>(), [1, 3]);
    let http: HttpClient = client::http1();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    const REQUESTS: usize = 2000;
    for n in 0..REQUESTS {
        let url = format!("http://127.0.0.{}:{srv_port}/", 1 + n % 3);
        let (status, body) = client::get(&http, &url).await;
        assert_eq!(status, 200, "{body}");
        *counts.entry(body).or_default() += 1;
    }
    let share = |name: &str| counts.get(name).copied().unwrap_or(0) as f64 / REQUESTS as f64;
    eprintln!("SRV shares: b21 {:.3}, b22 {:.3}", share("b21"), share("b22"));
    assert!((share("b21") - 0.25).abs() <= 0.05, "{counts:?}");
    assert!((share("b22") - 0.75).abs() <= 0.05, "{counts:?}");

    // A resolver outage changes nothing but the reported failure.
    let kept = every_node(&cluster, "app").await;
    dns.kill();
    wait::value_of("every node shows the failure", 3 * INTERVAL, || async {
        let mut all = Vec::new();
        for i in 0..cluster.members.len() {
            let mut admin = cluster.admin(i, Duration::from_millis(500));
            let (state, _) = admin.read(true).await.ok()?;
            all.push(state.spec().pool("app")?.discovery_status.failure.is_some());
        }
        all.iter().all(|f| *f).then_some(())
    })
    .await;
    let (status, text, _) = cluster.ctl(0, &["pools", "app", "--stale"]);
    assert!(status.success());
    eprintln!("{text}");
    assert!(text.contains("failing: timeout since"), "{text}");
    assert!(text.contains("last good answer"), "{text}");
    // Past two more intervals: the set and its index are still the same, and traffic flows.
    let outage = Instant::now();
    let mut served = 0;
    while outage.elapsed() < 2 * INTERVAL {
        let (status, _) = client::get(&http, &format!("http://{}/", cluster.members[served % 3].http)).await;
        assert_eq!(status, 200);
        served += 1;
    }
    let still: Vec<Option<Seen>> = every_node(&cluster, "app").await;
    assert_eq!(still, kept, "the outage changed no node's set");
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let metrics = format!("http://127.0.0.{leader}:{}/metrics", cluster.metrics_port);
    let (_, text) = client::get(&client::http1(), &metrics).await;
    let counted = text
        .lines()
        .any(|l| l.starts_with("raftlb_discovery_failures_total{pool=\"app\",reason=\"timeout\"}"));
    assert!(counted, "the leader counts the failures:\n{text}");

    // The name goes away: NXDOMAIN keeps the set for nxdomain_hold (4 s),
    // then empties it on every node at one index.
    let dns = Dnsmasq::start(&dir, dns_port, backend_port, &[]).await;
    wait::value_of("every node sees NXDOMAIN", 3 * INTERVAL, || async {
        let mut all = Vec::new();
        for i in 0..cluster.members.len() {
            let mut admin = cluster.admin(i, Duration::from_millis(500));
            let (state, _) = admin.read(true).await.ok()?;
            let failure = state.spec().pool("app")?.discovery_status.failure;
            all.push(failure.is_some_and(|(f, _)| f == DiscoveryFailure::NxDomain));
        }
        all.iter().all(|f| *f).then_some(())
    })
    .await;
    let seen_nx = Instant::now();
    assert_eq!(every_node(&cluster, "app").await, kept, "held: the set is kept");
    let emptied = wait_everywhere(&cluster, "app", &[], NXDOMAIN_HOLD + 2 * INTERVAL).await;
    eprintln!(
        "NXDOMAIN emptied the set {:?} after every node showed it",
        seen_nx.elapsed()
    );
    assert!(seen_nx.elapsed() >= NXDOMAIN_HOLD - Duration::from_millis(500));
    assert_eq!(emptied.1, down.1 + 1);
    drop(dns);
}
