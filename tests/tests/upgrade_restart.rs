//! In-place upgrade of one standalone node (`raftlb run --upgrade`,
//! SIGUSR2): under keep-alive and connection-per-request load, ten
//! consecutive upgrades lose no request and refuse no connection; a
//! WebSocket opened before an upgrade is served until the old process's
//! drain deadline and then closed; a UDP flow keeps its replies; the data
//! dir's lock refuses a second plain `raftlb run`.

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use raftlb_tests::backends::{HttpBackend, udp_echo, ws_echo};
use raftlb_tests::process::{Raftlb, TempDir, binary};
use raftlb_tests::{client, free_port, wait};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

/// The old process's drain deadline in these tests.
const DRAIN: Duration = Duration::from_secs(3);
/// No load loop runs longer than this, whatever happens.
const LOAD_LIMIT: Duration = Duration::from_secs(240);

struct Site {
    web: String,
    ws: String,
    udp: String,
    metrics: String,
    config: String,
    _backends: Vec<tokio::task::JoinHandle<()>>,
    _http: HttpBackend,
}

/// The site's listeners; `web`'s connection rate per source is not
/// limited: the load comes from one address, at more new connections a
/// second than the default limit lets through on a fast machine.
async fn site() -> Site {
    let http = HttpBackend::start("web").await;
    let (ws_backend, ws_task) = ws_echo("ws").await;
    let (udp_backend, udp_task) = udp_echo("udp").await;
    let [web, ws, udp, metrics] = [0; 4].map(|_| format!("127.0.0.1:{}", free_port()));
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"{}s\"\nmetrics = \"{metrics}\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{web}\"\npool = \"web\"\naccess_log = false\n\
         [listener.limits]\nconnection_rate = 0\n\n\
         [[listener]]\nname = \"ws\"\nprotocol = \"http\"\nbind = \"{ws}\"\npool = \"ws\"\naccess_log = false\n\n\
         [[listener]]\nname = \"dns\"\nprotocol = \"udp\"\nbind = \"{udp}\"\npool = \"udp\"\n\n\
         [[pool]]\nname = \"web\"\nbackends = [{{ address = \"{}\" }}]\n\n\
         [[pool]]\nname = \"ws\"\nbackends = [{{ address = \"{ws_backend}\" }}]\n\n\
         [[pool]]\nname = \"udp\"\nbackends = [{{ address = \"{udp_backend}\" }}]\n",
        DRAIN.as_secs(),
        http.address,
    );
    Site {
        web,
        ws,
        udp,
        metrics,
        config,
        _backends: vec![ws_task, udp_task],
        _http: http,
    }
}

/// What one load client saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: Vec<String>,
    refused: u64,
    /// When each request was answered.
    answered: Vec<Instant>,
    /// The longest a connection-per-request client waited, connect to answer.
    slowest: Duration,
}

/// Background HTTP clients, each in a loop until stopped (or [`LOAD_LIMIT`]).
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    fn start(web: &str, keep_alive: usize, per_request: usize) -> Load {
        let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let mut clients = Vec::new();
        for _ in 0..keep_alive {
            let (stop, answered, url) = (Arc::clone(&stop), Arc::clone(&answered), format!("http://{web}/"));
            clients.push(tokio::spawn(async move {
                // One client per loop: at most one pooled connection each.
                let client = client::http1::<Full<bytes::Bytes>>();
                let mut tally = Tally::default();
                let began = Instant::now();
                while !stop.load(Ordering::Relaxed) && began.elapsed() < LOAD_LIMIT {
                    let request = hyper::Request::get(&url).body(Full::default()).expect("request");
                    let result = tokio::time::timeout(Duration::from_secs(5), async {
                        let response = client.request(request).await.map_err(|e| format!("{e:?}"))?;
                        let status = response.status().as_u16();
                        response
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| format!("body: {e}"))?;
                        Ok::<_, String>(status)
                    })
                    .await
                    .unwrap_or_else(|_| Err("no answer within 5 s".to_string()));
                    tally.record(result, &answered);
                }
                tally
            }));
        }
        for _ in 0..per_request {
            let (stop, answered, web) = (Arc::clone(&stop), Arc::clone(&answered), web.to_string());
            clients.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let began = Instant::now();
                while !stop.load(Ordering::Relaxed) && began.elapsed() < LOAD_LIMIT {
                    let start = Instant::now();
                    let stream = match tokio::net::TcpStream::connect(&web).await {
                        Ok(stream) => stream,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            tally.refused += 1;
                            continue;
                        }
                        Err(e) => {
                            tally.failed.push(format!("connect: {e}"));
                            continue;
                        }
                    };
                    let result = tokio::time::timeout(Duration::from_secs(5), one_request(stream))
                        .await
                        .unwrap_or_else(|_| Err("no answer within 5 s".to_string()));
                    tally.slowest = tally.slowest.max(start.elapsed());
                    tally.record(result, &answered);
                }
                tally
            }));
        }
        Load {
            stop,
            answered,
            clients,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    async fn finish(self) -> Vec<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let mut tallies = Vec::new();
        for client in self.clients {
            tallies.push(client.await.expect("load client"));
        }
        tallies
    }
}

impl Tally {
    fn record(&mut self, result: Result<u16, String>, answered: &AtomicU64) {
        match result {
            Ok(200) => {
                self.ok += 1;
                self.answered.push(Instant::now());
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => self.failed.push(format!("status {status}")),
            Err(e) => self.failed.push(e),
        }
    }
}

/// One `Connection: close` request on its own connection; the status.
async fn one_request(mut stream: tokio::net::TcpStream) -> Result<u16, String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let head = String::from_utf8_lossy(&reply);
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {:?}",
                head.chars().take(40).collect::<String>()
            )
        })
}

/// Upgrades `node` in place with `raftlb run --upgrade` and returns the new
/// process once the old one has handed over and exited.
async fn upgrade(node: Raftlb, round: usize) -> Raftlb {
    let mut old = node;
    let mut new = old.spawn_successor(&format!("raftlb-{round}.log"));
    let status = old.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "upgrade {round}: old process exited {status}:\n{}",
        old.log()
    );
    assert!(
        old.log().contains("handed over to the new process; bye"),
        "upgrade {round}:\n{}",
        old.log()
    );
    new.ready(&[]).await;
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_upgrades_under_load_lose_no_request_and_refuse_no_connection() {
    let site = site().await;
    let mut node = Raftlb::start(&site.config, &[&site.web, &site.metrics]).await;
    let load = Load::start(&site.web, 4, 4);
    // A baseline: two seconds of load before any upgrade.
    let loaded = Instant::now();
    wait::until("two seconds of load", Duration::from_secs(10), || {
        loaded.elapsed() >= Duration::from_secs(2) && load.answered() > 200
    })
    .await;
    let mut times = Vec::new();
    let first = Instant::now();
    for round in 1..=10 {
        let begun = Instant::now();
        node = upgrade(node, round).await;
        times.push(begun.elapsed());
        // The new process serves the load before the next round.
        let now = load.answered();
        wait::until(
            "load answered by the new process",
            Duration::from_secs(10),
            || load.answered() > now + 100,
        )
        .await;
    }
    let last = Instant::now();
    let tallies = load.finish().await;
    let (keep_alive, per_request) = tallies.split_at(4);
    let sum = |tallies: &[Tally]| tallies.iter().map(|t| t.ok).sum::<u64>();
    let failed: Vec<&String> = tallies.iter().flat_map(|t| &t.failed).collect();
    let refused: u64 = tallies.iter().map(|t| t.refused).sum();
    let mut answered: Vec<Instant> = tallies.iter().flat_map(|t| t.answered.iter().copied()).collect();
    answered.sort();
    let longest = |from: Instant, to: Instant| {
        answered
            .windows(2)
            .filter(|w| w[1] >= from && w[0] <= to)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    };
    let (baseline, gap) = (longest(loaded, first), longest(first, last));
    let slowest = per_request.iter().map(|t| t.slowest).max().unwrap_or_default();
    times.sort();
    println!(
        "10 in-place upgrades under load: {} requests answered ({} keep-alive, {} connection-per-request), \
         {} failed, {refused} connections refused; longest stretch with no answer {gap:?} (in the 2 s \
         before the first upgrade: {baseline:?}); slowest connection-per-request answer {slowest:?}; upgrade (old process exited) min {:?} median {:?} max {:?}",
        sum(keep_alive) + sum(per_request),
        sum(keep_alive),
        sum(per_request),
        failed.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(refused, 0, "refused connections");
    assert!(sum(keep_alive) > 0 && sum(per_request) > 0);
    // The metrics listener came across too.
    let (status, body) = client::get(&client::http1(), &format!("http://{}/metrics", site.metrics)).await;
    assert_eq!(status, 200);
    assert!(body.contains("raftlb_raft_term"), "{body}");
    assert!(
        node.log().contains("took the running process's sockets"),
        "{}",
        node.log()
    );
}

/// The process SIGUSR2 started (its pid is in the data dir's lock file),
/// killed when the test ends.
struct Adopted(u32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

fn lock_holder(node: &Raftlb) -> Option<u32> {
    let text = std::fs::read_to_string(node.dir().join("data/node1/raftlb.lock")).ok()?;
    text.trim().strip_prefix("pid=")?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_served_to_the_deadline_and_a_udp_flow_keeps_its_replies_across_sigusr2() {
    let site = site().await;
    let mut node = Raftlb::start(&site.config, &[&site.web, &site.ws]).await;
    let old_pid = node.pid();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", site.ws))
        .await
        .expect("WebSocket through the old process");
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    udp.connect(&site.udp).await.expect("connect");

    // The UDP flow: a datagram every 20 ms, each answered within 1 s.
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(Mutex::new(Vec::new()));
    let flow = {
        let (stop, lost) = (Arc::clone(&stop), Arc::clone(&lost));
        tokio::spawn(async move {
            let (mut sent, began) = (0u32, Instant::now());
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) && began.elapsed() < LOAD_LIMIT {
                let text = format!("ping-{sent}");
                udp.send(text.as_bytes()).await.expect("send");
                let expected = format!("udp:{text}");
                let answered = tokio::time::timeout(Duration::from_secs(1), async {
                    loop {
                        let n = udp.recv(&mut buf).await.expect("recv");
                        if buf[..n] == *expected.as_bytes() {
                            return;
                        }
                    }
                })
                .await;
                if answered.is_err() {
                    lost.lock().expect("lost").push(sent);
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };

    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-USR2", &old_pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The WebSocket keeps talking while the old process drains.
    let mut echoes = 0u32;
    let mut draining_since = None;
    let mut last_echo = Instant::now();
    let closed = loop {
        if draining_since.is_none() && node.log().contains("stopping: no new connections, draining") {
            draining_since = Some(Instant::now());
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(60),
            "the WebSocket was never closed"
        );
        if ws.send(Message::text(format!("m{echoes}"))).await.is_err() {
            break None;
        }
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Close(_))) | None) => break None,
            Ok(Some(Ok(message))) => {
                assert_eq!(message, Message::text(format!("ws:m{echoes}")));
                echoes += 1;
                last_echo = Instant::now();
            }
            Ok(Some(Err(e))) => break Some(e),
            Err(_) => panic!("no echo within 2 s, and the WebSocket still open"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let closed_at = Instant::now();
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", node.log());
    let draining_since = draining_since.expect("the old process drained");
    let served = last_echo - draining_since;
    println!(
        "SIGUSR2 upgrade: the WebSocket echoed {echoes} messages, the last {served:?} into the old \
         process's {DRAIN:?} drain; closed {:?} into it ({closed:?})",
        closed_at - draining_since
    );
    assert!(
        served >= DRAIN - Duration::from_millis(600),
        "served only {served:?} of the drain"
    );
    assert!(closed_at - draining_since <= DRAIN + Duration::from_secs(2));
    // Closed, not reset: the old process dropped its end with a FIN.
    match &closed {
        None | Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {}
        Some(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => {}
        Some(other) => panic!("the WebSocket was not closed cleanly: {other}"),
    }

    // The new process, started by SIGUSR2, serves WebSockets and the UDP flow.
    let new_pid = wait::value("the new process holds the lock", Duration::from_secs(10), || {
        lock_holder(&node).filter(|pid| *pid != old_pid)
    })
    .await;
    let _adopted = Adopted(new_pid);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", site.ws))
        .await
        .expect("WebSocket through the new process");
    ws.send(Message::text("again")).await.expect("send");
    let echo = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    assert!(
        matches!(echo, Ok(Some(Ok(ref m))) if *m == Message::text("ws:again")),
        "{echo:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let sent = flow.await.expect("UDP flow");
    let lost = lost.lock().expect("lost").clone();
    println!(
        "UDP flow across the upgrade: {sent} datagrams, {} unanswered",
        lost.len()
    );
    assert!(lost.is_empty(), "datagrams without a reply: {lost:?}");
    assert!(sent > 100, "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_lock_refuses_a_second_process_by_name() {
    let site = site().await;
    let node = Raftlb::start(&site.config, &[&site.web]).await;
    let second = std::process::Command::new(binary())
        .args(["run", "--config", "raftlb.toml"])
        .current_dir(node.dir())
        .output()
        .expect("run a second raftlb");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "is in use by another raftlb process (pid {}, per raftlb.lock)",
        node.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // The running node never noticed.
    let (status, _) = client::get(&client::http1(), &format!("http://{}/", site.web)).await;
    assert_eq!(status, 200);

    // --upgrade with nothing to take over from says so.
    let empty = TempDir::new("no-predecessor");
    empty.write("raftlb.toml", &site.config);
    let orphan = std::process::Command::new(binary())
        .args(["run", "--upgrade", "--config", "raftlb.toml"])
        .current_dir(empty.path())
        .output()
        .expect("run raftlb --upgrade");
    let stderr = String::from_utf8_lossy(&orphan.stderr);
    assert_eq!(orphan.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot upgrade in place: nothing listens on"),
        "{stderr}"
    );
}

/// Waits until the data dir's lock names a process other than `not`.
async fn next_holder(node: &Raftlb, not: &[u32]) -> u32 {
    wait::value("another process holds the lock", Duration::from_secs(20), || {
        lock_holder(node).filter(|pid| !not.contains(pid))
    })
    .await
}

/// Whether `/metrics` on `address` says this node leads (a standalone node
/// with its Raft running).
async fn leads(address: &str) -> bool {
    let request = hyper::Request::get(format!("http://{address}/metrics"))
        .body(Full::<bytes::Bytes>::default())
        .expect("request");
    let Ok(response) = client::http1().request(request).await else {
        return false;
    };
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&body).contains("raftlb_raft_leader 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_killed_mid_upgrade_leaves_the_node_serving_and_with_raft() {
    let site = site().await;
    let mut node = Raftlb::start(&site.config, &[&site.web, &site.metrics]).await;
    let old_pid = node.pid();
    let load = Load::start(&site.web, 2, 2);
    let before = load.answered();
    wait::until("load answered", Duration::from_secs(10), || {
        load.answered() > before + 100
    })
    .await;

    // Killed as soon as the old process has heard from it. The hand-over
    // takes a few milliseconds, so the new process is held at the log's
    // release (`upgrade::wait_log_released`) by the lock a release of
    // formats 1–3 keeps on its sled log, held here: the kill lands
    // mid-upgrade on a machine of any speed.
    let sled_log = node.dir().join("data/node1/raft");
    std::fs::create_dir_all(&sled_log).expect("sled log dir");
    let held = std::fs::File::create(sled_log.join("db")).expect("sled lock file");
    held.lock().expect("hold the sled log's lock");
    let mut doomed = node.spawn_successor("doomed.log");
    let doomed_pid = doomed.pid();
    wait::until(
        "the old process hears from the new one",
        Duration::from_secs(20),
        || node.log().contains("a new process asks to take over"),
    )
    .await;
    doomed.kill();
    drop(held);
    std::fs::remove_dir_all(&sled_log).expect("remove the sled log dir");
    let outcome = wait::value("the old process notices", Duration::from_secs(20), || {
        let log = node.log();
        if log.contains("in-place upgrade or reload abandoned; serving on") {
            Some("before it released the log: it kept its Raft")
        } else if log.contains("starts a copy of its own binary") {
            Some("after it released the log: a copy of its own binary took over with Raft")
        } else {
            None
        }
    })
    .await;
    let mut adopted = Vec::new();
    if outcome.starts_with("after") {
        let status = node.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{}", node.log());
        adopted.push(Adopted(next_holder(&node, &[old_pid, doomed_pid]).await));
    }
    let now = load.answered();
    wait::until("the node serves on", Duration::from_secs(10), || {
        load.answered() > now + 100
    })
    .await;
    let mut with_raft = false;
    let began = Instant::now();
    while !with_raft && began.elapsed() < Duration::from_secs(10) {
        with_raft = leads(&site.metrics).await;
    }
    assert!(
        with_raft,
        "the node has no Raft leader after the failed upgrade ({outcome})"
    );

    // The next upgrade takes over all the same.
    if adopted.is_empty() {
        node = upgrade(node, 1).await;
        assert!(node.log().contains("raftlb node ready"), "{}", node.log());
    } else {
        let copy = adopted[0].0;
        let status = std::process::Command::new("kill")
            .args(["-USR2", &copy.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        adopted.push(Adopted(next_holder(&node, &[old_pid, doomed_pid, copy]).await));
    }
    let now = load.answered();
    wait::until("the next process serves", Duration::from_secs(10), || {
        load.answered() > now + 100
    })
    .await;
    let tallies = load.finish().await;
    let failed: Vec<&String> = tallies.iter().flat_map(|t| &t.failed).collect();
    let refused: u64 = tallies.iter().map(|t| t.refused).sum();
    println!(
        "a new process killed mid-upgrade, {outcome}: {} requests answered, {} failed, {refused} refused; \
         the next upgrade took over",
        tallies.iter().map(|t| t.ok).sum::<u64>(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(refused, 0);
}
