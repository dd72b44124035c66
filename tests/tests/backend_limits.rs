//! Per-backend connection limits through a real `raftlb` process, as
//! HAProxy's `maxconn`/`maxqueue`/`timeout queue`: a backend never has more
//! than `max_connections` requests from the node at once; what finds it
//! full waits in the pool's queue and is served in turn, and what finds the
//! queue full, or waits past `queue_timeout`, gets `503`, counted by reason
//! in `/metrics`. A TCP listener's connection past the limit and queue is
//! closed.

use raftlb_tests::backends::{self, HttpBackend};
use raftlb_tests::client::{self, raw_get};
use raftlb_tests::free_port;
use raftlb_tests::process::Raftlb;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Node {
    _process: Raftlb,
    http: SocketAddr,
    metrics: String,
}

async fn start(backend: &str, protocol: &str, pool_keys: &str) -> Node {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"1s\"\nmetrics = \"{metrics}\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"{protocol}\"\nbind = \"{http}\"\npool = \"app\"\n\
         [listener.limits]\nconnections = 10000\nconnection_rate = 10000\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{backend}\" }}]\n{pool_keys}\n"
    );
    let process = Raftlb::start(&config, &[&http.to_string(), &metrics]).await;
    Node {
        _process: process,
        http,
        metrics: format!("http://{metrics}/metrics"),
    }
}

async fn metric(node: &Node, series: &str) -> f64 {
    let text = client::get(&client::http1(), &node.metrics).await.1;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The most requests `backend` had in flight at once while `work` ran.
async fn peak_in_flight<T>(backend: &HttpBackend, work: impl Future<Output = T>) -> (T, usize) {
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counters = Arc::clone(&backend.counters);
    let watch = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(counters.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let out = work.await;
    done.store(true, Ordering::SeqCst);
    watch.await.expect("watcher");
    (out, peak.load(Ordering::SeqCst))
}

/// `n` requests at once, each on its own connection: (status, seconds) each.
async fn burst(node: &Node, n: usize, path: &str) -> Vec<(u16, f64)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (target, path) = (node.http, path.to_string());
            tokio::spawn(async move {
                let started = Instant::now();
                let status = raw_get(target, None, &path, &[]).await.map_or(0, |r| r.status);
                (status, started.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_queues_then_refuses_with_503() {
    let backend = HttpBackend::start_slow("b").await;
    let node = start(
        &backend.address.to_string(),
        "http",
        "max_connections = 2\nmax_queue = 3\nqueue_timeout = \"10s\"",
    )
    .await;
    let (answers, peak) = peak_in_flight(&backend, burst(&node, 10, "/slow?ms=600")).await;
    let served: Vec<f64> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, t)| *t)
        .collect();
    let refused: Vec<f64> = answers
        .iter()
        .filter(|(s, _)| *s == 503)
        .map(|(_, t)| *t)
        .collect();
    println!("statuses {answers:?}; peak at the backend {peak}");
    assert!(
        peak <= 2,
        "the backend had {peak} requests at once, over max_connections 2"
    );
    assert_eq!(
        served.len(),
        5,
        "two at once plus three queued are served: {answers:?}"
    );
    assert_eq!(refused.len(), 5, "the rest find the queue full: {answers:?}");
    assert!(
        refused.iter().all(|t| *t < 0.5),
        "a full queue refuses at once, not after a wait: {refused:?}"
    );
    assert!(
        served.iter().any(|t| *t >= 1.1),
        "queued requests waited for a slot: {served:?}"
    );
    let full = metric(
        &node,
        "raftlb_pool_queue_refusals_total{pool=\"app\",reason=\"full\"}",
    )
    .await;
    assert_eq!(full, 5.0);
    assert_eq!(metric(&node, "raftlb_pool_queued{pool=\"app\"}").await, 0.0);
    let active = format!(
        "raftlb_backend_active{{pool=\"app\",backend=\"{}\"}}",
        backend.address
    );
    assert_eq!(metric(&node, &active).await, 0.0, "every slot freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_work_is_refused_after_the_queue_timeout() {
    let backend = HttpBackend::start_slow("b").await;
    let node = start(
        &backend.address.to_string(),
        "http",
        "max_connections = 1\nmax_queue = 100\nqueue_timeout = \"300ms\"",
    )
    .await;
    let answers = burst(&node, 4, "/slow?ms=1500").await;
    println!("statuses {answers:?}");
    let served = answers.iter().filter(|(s, _)| *s == 200).count();
    let timed_out: Vec<f64> = answers
        .iter()
        .filter(|(s, _)| *s == 503)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(served, 1, "{answers:?}");
    assert_eq!(timed_out.len(), 3, "{answers:?}");
    assert!(
        timed_out.iter().all(|t| (0.29..1.2).contains(t)),
        "refused at the queue timeout: {timed_out:?}"
    );
    let timeouts = metric(
        &node,
        "raftlb_pool_queue_refusals_total{pool=\"app\",reason=\"timeout\"}",
    )
    .await;
    assert_eq!(timeouts, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_past_the_limit_and_queue_is_closed() {
    let (echo, _task) = backends::tcp_echo().await;
    let node = start(&echo.to_string(), "tcp", "max_connections = 1\nmax_queue = 0").await;
    // The readiness probe's connection may hold the slot for a moment.
    let first = served_within(node.http, Duration::from_secs(5)).await;
    let mut second = TcpStream::connect(node.http).await.expect("the listener accepts");
    let _ = second.write_all(b"two").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut rest))
        .await
        .expect("the second connection is closed, not left hanging");
    assert!(
        rest.is_empty(),
        "nothing echoed past the limit: {read:?} {rest:?}"
    );
    drop(first);
    // Its slot freed, a new connection is served again.
    let _third = served_within(node.http, Duration::from_secs(5)).await;
    let full = metric(
        &node,
        "raftlb_pool_queue_refusals_total{pool=\"app\",reason=\"full\"}",
    )
    .await;
    assert!(full >= 1.0);
}

/// A connection through `listener` that the echo backend answers, trying
/// again until `within` has passed.
async fn served_within(listener: SocketAddr, within: Duration) -> TcpStream {
    let deadline = Instant::now() + within;
    loop {
        let mut stream = TcpStream::connect(listener).await.expect("connect");
        stream.write_all(b"hello").await.expect("write");
        let mut echoed = [0u8; 5];
        match tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut echoed)).await {
            Ok(Ok(_)) => return stream,
            _ => assert!(
                Instant::now() < deadline,
                "no connection was served within {within:?}"
            ),
        }
    }
}
