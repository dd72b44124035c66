//! raftlb under systemd (`deploy/systemd/raftlb.service`, `Type=notify`):
//! the unit file passes `systemd-analyze verify`, and a real node, run with
//! a fake `$NOTIFY_SOCKET` (a datagram socket of the test's), says
//! `READY=1` only once its listener answers and it has applied what the
//! leader had committed, pings the watchdog, and says `STOPPING=1` when
//! SIGTERM starts its drain — in that order. A node that cannot join (no
//! quorum) serves its listener but stays not ready (`/readyz` 503).

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client;
use raftlb_tests::cluster::{Cluster, add_marker, http_seed, marker};
use raftlb_tests::process::{Raftlb, TempDir, binary};
use raftlb_tests::wait;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

/// What the fake service manager heard, in order.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<(Instant, String)>>>);

impl Heard {
    /// Every `KEY=VALUE` line heard, in order, with when.
    fn lines(&self) -> Vec<(Instant, String)> {
        let datagrams = self.0.lock().expect("heard").clone();
        datagrams
            .into_iter()
            .flat_map(|(at, text)| text.lines().map(|l| (at, l.to_string())).collect::<Vec<_>>())
            .collect()
    }

    fn position(&self, line: &str) -> Option<usize> {
        self.lines().iter().position(|(_, l)| l == line)
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|(_, l)| l == line).count()
    }
}

/// A fake `$NOTIFY_SOCKET`: its path, what it heard, and its directory.
fn notify_socket() -> (PathBuf, Heard, TempDir) {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let heard = Heard::default();
    let sink = heard.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            sink.0.lock().expect("heard").push((Instant::now(), text));
        }
    });
    (path, heard, dir)
}

fn notify_env(socket: &std::path::Path) -> Vec<(String, String)> {
    vec![
        ("NOTIFY_SOCKET".to_string(), socket.display().to_string()),
        // Every 150 ms, so a second shows several.
        ("WATCHDOG_USEC".to_string(), "300000".to_string()),
    ]
}

/// `GET path` on node `index`'s metrics address: (status, body).
async fn probe(cluster: &Cluster, index: usize, path: &str) -> Option<(u16, String)> {
    let url = format!(
        "http://127.0.0.{}:{}{path}",
        cluster.members[index].id, cluster.metrics_port
    );
    client::try_get(&client::http1(), &url).await.ok()
}

fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_unit_file_verifies() {
    if !raftlb_tests::tool_or_skip("the_unit_file_verifies", "systemd-analyze") {
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/raftlb.service"
    ))
    .expect("deploy/systemd/raftlb.service");
    for required in [
        "Type=notify",
        "NotifyAccess=all",
        "WatchdogSec=",
        "ExecReload=",
        "StateDirectory=raftlb",
        "LimitNOFILE=",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(required)),
            "the unit lacks {required}"
        );
    }
    // systemd-analyze checks that the commands exist: point them at this build.
    let dir = TempDir::new("unit");
    let file = dir.write(
        "raftlb.service",
        &unit.replace("/usr/local/bin/raftlb", &binary().display().to_string()),
    );
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // A misspelt key is only a warning: any output at all fails.
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        output.status
    );
    println!("systemd-analyze verify raftlb.service: ok, no warnings");
}

#[tokio::test]
async fn ready_once_serving_and_joined_then_watchdog_then_stopping() {
    let backend = HttpBackend::start("app-1").await;
    let mut cluster = Cluster::new(3, &http_seed("round_robin", &[backend.address]));
    for i in 0..2 {
        cluster.spawn(i);
    }
    for i in 0..2 {
        cluster.wait_ready(i).await;
    }
    // Entries the third node has to catch up on.
    let mut admin = cluster.admin(0, Duration::from_secs(5));
    for n in 0..40 {
        assert!(admin.write(&add_marker(n)).await.expect("write").applied);
    }
    let committed = admin.status().await.expect("status").applied_index;

    let (socket, heard, _dir) = notify_socket();
    let started = Instant::now();
    cluster.members[2].process = Some(Raftlb::spawn_as(
        &cluster.config(2),
        &binary(),
        &notify_env(&socket),
    ));
    wait::until("READY=1", Duration::from_secs(20), || {
        heard.position("READY=1").is_some()
    })
    .await;
    let ready_after = started.elapsed();
    // At READY=1 the listener answers and the node has caught up.
    let url = format!("http://{}/", cluster.members[2].http);
    let (status, _) = client::get(&client::http1(), &url).await;
    assert_eq!(status, 200, "the listener answers at READY=1");
    let (status, body) = probe(&cluster, 2, "/readyz").await.expect("/readyz");
    assert_eq!((status, body.trim()), (200, "ready"));
    let (_, metrics) = probe(&cluster, 2, "/metrics").await.expect("/metrics");
    let applied = sample(&metrics, "raftlb_raft_applied_index").expect("applied index");
    assert!(
        applied >= committed as f64,
        "READY=1 with applied index {applied}, the leader had committed {committed}"
    );
    let ready = heard.position("READY=1").expect("ready");
    let joining = heard
        .lines()
        .iter()
        .position(|(_, l)| l.starts_with("STATUS=joining"))
        .expect("STATUS=joining before READY=1");
    assert!(
        joining < ready,
        "joining is said before ready: {:?}",
        heard.lines()
    );

    wait::until("two watchdog pings after READY=1", Duration::from_secs(3), || {
        heard.lines()[ready..]
            .iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .count()
            >= 2
    })
    .await;
    cluster.members[2].process.as_ref().expect("running").terminate();
    wait::until("STOPPING=1", Duration::from_secs(10), || {
        heard.position("STOPPING=1").is_some()
    })
    .await;
    let status = cluster.members[2]
        .process
        .as_mut()
        .expect("running")
        .wait_exit(Duration::from_secs(20))
        .await;
    assert!(status.success(), "node 3 exits cleanly: {status}");
    let lines: Vec<String> = heard.lines().into_iter().map(|(_, l)| l).collect();
    let stopping = lines.iter().position(|l| l == "STOPPING=1").expect("stopping");
    assert_eq!(lines.iter().filter(|l| *l == "READY=1").count(), 1, "{lines:?}");
    assert!(ready < stopping, "{lines:?}");
    assert!(
        !lines[stopping..].iter().any(|l| l == "WATCHDOG=1"),
        "no watchdog ping once stopping: {lines:?}"
    );
    println!(
        "node 3: READY=1 {} ms after start (applied {applied} ≥ committed {committed}); \
         {} watchdog pings; messages: {lines:?}",
        ready_after.as_millis(),
        heard.count("WATCHDOG=1")
    );
}

#[tokio::test]
async fn a_node_that_cannot_join_serves_but_is_not_ready() {
    let backend = HttpBackend::start("app-1").await;
    let mut cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    // One write after the seed, applied on node 3: its append is fsynced,
    // and with it the committed index node 3 saved (lazily) for the seed,
    // which a restart replays up to before it serves.
    let mut admin = cluster.admin(0, Duration::from_secs(5));
    admin.write(&add_marker(1)).await.expect("a write after the seed");
    wait::value_of("node 3 applies the write", Duration::from_secs(10), || async {
        let (state, _) = cluster.admin(2, Duration::from_secs(5)).read(false).await.ok()?;
        state.spec().pools[0]
            .backends
            .iter()
            .any(|b| b.address == marker(1))
            .then_some(())
    })
    .await;
    for i in 0..3 {
        cluster.kill(i);
    }
    // Node 3 alone: it replays its log and serves, but has no quorum.
    let (socket, heard, _dir) = notify_socket();
    cluster.members[2].process = Some(Raftlb::spawn_as(
        &cluster.config(2),
        &binary(),
        &notify_env(&socket),
    ));
    let http = cluster.members[2].http.clone();
    wait::port_open(&http, Duration::from_secs(15)).await;
    let (status, body) = wait::value_of("/readyz answers", Duration::from_secs(5), || {
        probe(&cluster, 2, "/readyz")
    })
    .await;
    assert_eq!(status, 503, "not ready without a quorum: {body}");
    assert!(body.starts_with("joining"), "{body}");
    // A negative claim needs a window: 2 s is over ten election timeouts.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        assert_eq!(heard.position("READY=1"), None, "READY=1 without a quorum");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = probe(&cluster, 2, "/readyz").await.expect("/readyz");
    assert_eq!(status, 503, "{body}");
    // A second node makes a quorum: now it joins.
    let quorum = Instant::now();
    cluster.spawn(0);
    wait::until("READY=1 once a quorum exists", Duration::from_secs(20), || {
        heard.position("READY=1").is_some()
    })
    .await;
    let (status, _) = probe(&cluster, 2, "/readyz").await.expect("/readyz");
    assert_eq!(status, 200);
    println!(
        "without a quorum: /readyz 503 \"{}\"; READY=1 {} ms after a second node started",
        body.trim(),
        quorum.elapsed().as_millis()
    );
}
