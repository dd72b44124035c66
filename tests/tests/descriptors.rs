//! Out of descriptors: a node whose open-file limit is low (512, set with
//! `prlimit`) and whose listener is flooded with 400 requests held open by
//! a slow backend serves only its data plane's share of them (the rest wait
//! in the backlog) and keeps descriptors for its control plane: `ctl
//! status` answers, a write commits, `/metrics` answers, and it stays the
//! leader in the same term. In a test binary of its own: its 400 client
//! sockets must not take descriptors from other tests.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::process::Raftlb;
use raftlb_tests::wait;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const OPEN_FILES: u64 = 512;
const FLOOD: usize = 400;

fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_node_keeps_descriptors_for_its_control_plane() {
    let backend = HttpBackend::start_slow("slow").await;
    let mut cluster = Cluster::new(3, &http_seed("round_robin", &[backend.address]));
    cluster.members[0].process = Some(Raftlb::spawn_limited(&cluster.config(0), OPEN_FILES));
    cluster.spawn(1);
    cluster.spawn(2);
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    let log = cluster.members[0].process.as_ref().expect("node 1").log();
    assert!(
        log.contains(&format!("open_files={OPEN_FILES}")) && log.contains("data_plane_connections=128"),
        "{log}"
    );
    if cluster.wait_leader(Duration::from_secs(10)).await != 1 {
        let (status, _, err) = cluster.ctl(0, &["leader", "transfer", "--to", "1"]);
        assert!(status.success(), "{err}");
    }
    assert_eq!(cluster.wait_leader(Duration::from_secs(10)).await, 1);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", cluster.metrics_port);
    let http = raftlb_tests::client::http1();
    let term_before = metric(
        &raftlb_tests::client::get(&http, &metrics_url).await.1,
        "raftlb_raft_term",
    );

    // Each request held by the backend for 15 s costs the node two
    // descriptors (the client's and the backend's).
    let to = cluster.members[0].http.clone();
    let flood = tokio::task::spawn_blocking(move || {
        (0..FLOOD)
            .filter_map(|_| {
                let mut stream = TcpStream::connect(&to).ok()?;
                stream
                    .write_all(b"GET /slow?ms=15000 HTTP/1.1\r\nHost: lb\r\n\r\n")
                    .ok()?;
                Some(stream)
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("flood");
    assert_eq!(
        flood.len(),
        FLOOD,
        "the kernel queues what the node does not serve"
    );
    wait::until(
        "the node serves its share of the flood",
        Duration::from_secs(10),
        || backend.in_flight() >= 120,
    )
    .await;

    let (status, out, err) = cluster.ctl(0, &["--timeout", "5s", "status"]);
    assert!(status.success(), "ctl status while flooded: {err}");
    assert!(out.contains("leader"), "{out}");
    let (status, _, err) = cluster.ctl(
        0,
        &[
            "--timeout",
            "5s",
            "backend",
            "weight",
            "app",
            &backend.address.to_string(),
            "7",
        ],
    );
    assert!(status.success(), "a write while flooded: {err}");
    let metrics = raftlb_tests::client::get(&http, &metrics_url).await.1;
    assert_eq!(metric(&metrics, "raftlb_raft_leader"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "raftlb_raft_term"), term_before);
    let served = backend.in_flight();
    println!(
        "open files {OPEN_FILES}: {served} of {FLOOD} held requests served, the rest in the backlog; \
         ctl status, a write and /metrics answered; still the leader"
    );
    assert!(
        served <= 128,
        "{served} requests in flight: more than the data plane's share"
    );
    drop(flood);
}
