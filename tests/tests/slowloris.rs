//! Slowloris at scale through a real node: 1000 connections from one
//! source (127.0.0.50) each send one byte of a request head a second, and
//! the node closes every one `header_read_timeout` (3 s) after it
//! connected, however the bytes trickle; meanwhile another source
//! (127.0.0.60) keeps ≥ 99.9 % of its requests served, and the node's
//! resident memory stays flat: it grows by what the connections cost when
//! they open (under 48 KiB each: hyper's read and write buffers, the task)
//! and not at all while they trickle. In a test
//! binary of its own: its 1000 client sockets must not take descriptors or
//! CPU from other tests. Every loop is bounded in time.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::free_port;
use raftlb_tests::process::Raftlb;
use raftlb_tests::site::percentile;
use raftlb_tests::sources::{get_from, refusals};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ATTACKER: [u8; 4] = [127, 0, 0, 50];
const USER: [u8; 4] = [127, 0, 0, 60];
const CONNECTIONS: usize = 1000;
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// How late past its deadline a connection may be closed (accept queue,
/// timer wheel, a loaded machine).
const SLACK: Duration = Duration::from_millis(1500);
/// What 1000 open connections may cost the node, in all.
const RSS_GROWTH_KIB: u64 = 48 * 1024;
/// How much more it may hold at the end of the trickle than a second in.
const RSS_DRIFT_KIB: u64 = 4 * 1024;

async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(to))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// One slow client: a byte of a head a second, never finishing it. Returns
/// how long after connecting the node closed the connection, or `None` if
/// it was still open well past the deadline.
async fn slow_client(stream: TcpStream) -> Option<Duration> {
    let connected = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = async move {
        let head = b"GET / HTTP/1.1\r\nHost: lb\r\nX-Slow: ";
        for sent in 0.. {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if writer.write_all(&[byte]).await.is_err() {
                // Closed: the reader sees it.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let late = tokio::time::sleep(HEADER_TIMEOUT + 2 * SLACK);
    tokio::select! {
        () = closed => Some(connected.elapsed()),
        () = trickle => None,
        () = late => None,
    }
}

/// The legitimate user's requests, one every 10 ms on a new connection,
/// until `stop` (or a minute): each one's status (`None`: failed).
fn user_load(to: SocketAddr, stop: &AtomicBool) -> Vec<Option<u16>> {
    let started = Instant::now();
    let mut results = Vec::new();
    while !stop.load(Relaxed) && started.elapsed() < Duration::from_secs(60) {
        let (status, _) = get_from(USER, to);
        results.push(status);
        std::thread::sleep(Duration::from_millis(10));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slowloris_connections_are_closed_at_the_header_deadline() {
    // The clients' sockets, the user's and the fixtures' (and the node raises its own).
    let open_files = raftlb_node::descriptors::raise_limit();
    assert!(
        open_files >= 2 * CONNECTIONS as u64,
        "this test needs {} open files, the hard limit is {open_files}",
        2 * CONNECTIONS
    );
    let backend = HttpBackend::start("b").await;
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"1s\"\nmetrics = \"{metrics}\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{port}\"\npool = \"app\"\n\
         header_read_timeout = \"3s\"\naccess_log = false\n\
         limits = {{ connections = 5000, connection_rate = 5000, connection_burst = 5000 }}\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n",
        backend.address
    );
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let node = Raftlb::start(&config, &[&to.to_string()]).await;

    // Warm: the path has been taken, the allocator has its arenas.
    let http = raftlb_tests::client::http1();
    for _ in 0..100 {
        assert_eq!(
            raftlb_tests::client::get(&http, &format!("http://{to}/")).await.0,
            200
        );
    }
    let rss_before = node.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let user = {
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || user_load(to, &stop))
    };
    let attack_started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let stream = connect_from(ATTACKER, to).await.expect("an attacking connection");
        clients.spawn(slow_client(stream));
    }
    let connected_in = attack_started.elapsed();

    // Wait for every client's verdict (each bounded), sampling the node's
    // memory: a second into the trickle (every connection open, each
    // having sent its first bytes) and from then on.
    let (mut rss_settled, mut rss_peak) = (rss_before, rss_before);
    let mut closed_after = Vec::new();
    let mut still_open = 0;
    let deadline = Instant::now() + HEADER_TIMEOUT + 3 * SLACK + connected_in;
    while !clients.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the slow clients' verdicts are overdue"
        );
        let rss = node.rss_kib();
        rss_peak = rss_peak.max(rss);
        if attack_started.elapsed() < connected_in + Duration::from_secs(1) {
            rss_settled = rss_peak;
        }
        if let Ok(Some(joined)) = tokio::time::timeout(Duration::from_millis(100), clients.join_next()).await
        {
            match joined.expect("a slow client") {
                Some(after) => closed_after.push(after),
                None => still_open += 1,
            }
        }
    }
    let attack_took = attack_started.elapsed();
    stop.store(true, Relaxed);
    let results = user.await.expect("user");
    let rss_after = node.rss_kib();
    let metrics = raftlb_tests::client::get(&http, &format!("http://{metrics}/metrics"))
        .await
        .1;

    closed_after.sort();
    assert!(
        !closed_after.is_empty(),
        "no slow client was closed ({still_open} still open)"
    );
    let served = results.iter().filter(|s| **s == Some(200)).count();
    let success = served as f64 / results.len().max(1) as f64;
    println!(
        "slowloris: {CONNECTIONS} connections opened in {connected_in:?}, {} closed after {:?} / {:?} / {:?} \
         (min / median / max; header_read_timeout 3 s), {still_open} still open; attack over in {attack_took:?}",
        closed_after.len(),
        percentile(&closed_after, 0.0),
        percentile(&closed_after, 0.5),
        percentile(&closed_after, 1.0),
    );
    println!(
        "legitimate user: {served} of {} requests served ({:.2} %); node RSS {rss_before} KiB before, \
         {rss_settled} KiB a second in, {rss_peak} KiB at the peak (+{} KiB), {rss_after} KiB after; \
         {} header_timeout refusals counted",
        results.len(),
        success * 100.0,
        rss_peak - rss_before,
        refusals(&metrics, "header_timeout"),
    );
    assert_eq!(still_open, 0, "every slow connection is closed");
    assert!(
        percentile(&closed_after, 0.0) >= HEADER_TIMEOUT - Duration::from_millis(200),
        "a connection closed before its deadline"
    );
    assert!(
        percentile(&closed_after, 1.0) <= HEADER_TIMEOUT + SLACK,
        "a connection outlived its deadline by more than {SLACK:?}"
    );
    assert!(results.len() >= 100, "the user sent {} requests", results.len());
    assert!(
        success >= 0.999,
        "{:.3} % of the user's requests served",
        success * 100.0
    );
    assert!(
        rss_peak - rss_before < RSS_GROWTH_KIB,
        "node RSS grew {} KiB under the attack",
        rss_peak - rss_before
    );
    assert!(
        rss_peak - rss_settled < RSS_DRIFT_KIB,
        "node RSS grew {} KiB while the connections trickled",
        rss_peak - rss_settled
    );
    assert!(
        refusals(&metrics, "header_timeout") >= CONNECTIONS as u64,
        "{metrics}"
    );
}
