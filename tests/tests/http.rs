//! HTTP through a real `raftlb` process to real backends.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client::{self, RepeatBody};
use raftlb_tests::process::Raftlb;
use raftlb_tests::{free_port, wait};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-listener config over `backends` (address, weight) with `algorithm`.
fn config(bind: &str, algorithm: &str, backends: &[(String, u32)], extra_pool: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(address, weight)| format!("{{ address = \"{address}\", weight = {weight} }}"))
        .collect();
    format!(
        "[node]\nid = 1\ndrain_timeout = \"5s\"\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\n\n[[pool]]\nname = \"app\"\nalgorithm = \"{algorithm}\"\nbackends = [{}]\n{extra_pool}\n",
        list.join(", ")
    )
}

async fn start(
    algorithm: &str,
    backends: &[&HttpBackend],
    weights: &[u32],
    extra_pool: &str,
) -> (Raftlb, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    let list: Vec<(String, u32)> = backends
        .iter()
        .zip(weights)
        .map(|(b, w)| (b.address.to_string(), *w))
        .collect();
    let node = Raftlb::start(&config(&bind, algorithm, &list, extra_pool), &[&bind]).await;
    (node, format!("http://{bind}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_exactly() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let (_node, url) = start("round_robin", &[&a, &b], &[1, 1], "").await;
    let http = client::http1();
    let mut names = Vec::new();
    for _ in 0..20 {
        let (status, body) = client::get(&http, &format!("{url}/")).await;
        assert_eq!(status, 200);
        names.push(body);
    }
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin must alternate: {names:?}");
    }
    assert_eq!((a.served(), b.served()), (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let (_node, url) = start("weighted_round_robin", &[&a, &b], &[1, 3], "").await;
    let http = client::http1();
    for _ in 0..400 {
        assert_eq!(client::get(&http, &format!("{url}/")).await.0, 200);
    }
    let share_b = b.served() as f64 / 400.0;
    assert!(
        (share_b - 0.75).abs() <= 0.02,
        "backend b got {share_b:.3} of requests, expected 0.75 ± 0.02"
    );
    assert_eq!(a.served() + b.served(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_idle_backend() {
    let slow = HttpBackend::start_slow("slow").await;
    let fast = HttpBackend::start("fast").await;
    let (_node, url) = start("least_connections", &[&slow, &fast], &[1, 1], "").await;
    // Requests to /slow pile up on the slow backend and finish at once on the fast one.
    let mut held = Vec::new();
    for _ in 0..4 {
        let url = format!("{url}/slow?ms=3000");
        held.push(tokio::spawn(
            async move { client::get(&client::http1(), &url).await },
        ));
    }
    wait::until(
        "a request held by the slow backend",
        Duration::from_secs(5),
        || slow.in_flight() >= 1,
    )
    .await;
    let http = client::http1();
    for _ in 0..10 {
        let (status, body) = client::get(&http, &format!("{url}/")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "fast"),
            "the busy backend must be avoided"
        );
    }
    for h in held {
        assert_eq!(h.await.expect("join").0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_gives_502_quickly_and_live_one_is_tried_next() {
    let dead = format!("127.0.0.1:{}", free_port());
    let bind = format!("127.0.0.1:{}", free_port());
    let only_dead = config(&bind, "round_robin", &[(dead.clone(), 1)], "");
    let node = Raftlb::start(&only_dead, &[&bind]).await;
    let started = Instant::now();
    let (status, _) = client::get(&client::http1(), &format!("http://{bind}/")).await;
    assert_eq!(status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "502 took {:?}",
        started.elapsed()
    );
    drop(node);

    let live = HttpBackend::start("live").await;
    let bind = format!("127.0.0.1:{}", free_port());
    let mixed = config(
        &bind,
        "round_robin",
        &[(dead, 1), (live.address.to_string(), 1)],
        "",
    );
    let _node = Raftlb::start(&mixed, &[&bind]).await;
    let http = client::http1();
    for _ in 0..6 {
        assert_eq!(
            client::get(&http, &format!("http://{bind}/")).await,
            (200, "live".to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_gives_504() {
    let slow = HttpBackend::start_slow("slow").await;
    let (_node, url) = start("round_robin", &[&slow], &[1], "response_timeout = \"300ms\"").await;
    let started = Instant::now();
    let (status, _) = client::get(&client::http1(), &format!("{url}/slow?ms=3000")).await;
    assert_eq!(status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_flat_memory() {
    // 32 MiB each way against a 16 MiB allowance: buffering either body would
    // show (≥ 32 MiB), while the allocator's own arenas (mimalloc commits
    // 4 MiB segments per thread, and the control plane's threads allocate
    // too) stay inside it. 8 MiB once failed under a loaded CI machine.
    const SIZE: u64 = 32 * 1024 * 1024;
    let backend = HttpBackend::start("big").await;
    let (node, url) = start("round_robin", &[&backend], &[1], "").await;
    let http = client::http1();
    // Warm up allocator pools and connections before measuring.
    client::get(&http, &format!("{url}/bytes?n=65536")).await;
    let before = node.rss_kib();

    let response = http
        .request(
            Request::get(format!("{url}/bytes?n={SIZE}"))
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame
            .expect("frame")
            .into_data()
            .map(|d| d.len() as u64)
            .unwrap_or(0);
    }
    assert_eq!(received, SIZE);

    let uploader = client::http1::<RepeatBody>();
    let request = Request::post(format!("{url}/upload"))
        .body(RepeatBody::new(SIZE))
        .expect("req");
    let response = uploader.request(request).await.expect("upload");
    let echoed = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(echoed, SIZE.to_string());

    let grown = node.rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "RSS grew {grown} KiB while streaming 2 × 32 MiB: bodies are being buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_get_http1_by_default_and_http2_per_pool() {
    let backend = HttpBackend::start("b").await;
    let (_default, url) = start("round_robin", &[&backend], &[1], "").await;
    let client = client::http1();
    assert_eq!(
        client::get(&client, &format!("{url}/version")).await.1,
        "HTTP/1.1"
    );
    let (_h2, url) = start("round_robin", &[&backend], &[1], "backend_protocol = \"h2\"").await;
    // Concurrent requests share one multiplexed connection per worker.
    let mut answers = Vec::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), format!("{url}/version"));
        answers.push(tokio::spawn(async move { client::get(&client, &url).await }));
    }
    for answer in answers {
        assert_eq!(answer.await.expect("task"), (200, "HTTP/2.0".to_string()));
    }
    // An HTTP/2 client alike.
    let h2_client = client::http2();
    assert_eq!(
        client::get(&h2_client, &format!("{url}/version")).await.1,
        "HTTP/2.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_client_works() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let (_node, url) = start("round_robin", &[&a, &b], &[1, 1], "").await;
    let h2 = client::http2();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let (status, body) = client::get(&h2, &format!("{url}/")).await;
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert_eq!(bodies, ["a", "b", "a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_added_and_hop_by_hop_removed() {
    let backend = HttpBackend::start("h").await;
    let (_node, url) = start("round_robin", &[&backend], &[1], "").await;
    let request = Request::get(format!("{url}/headers"))
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = client::http1().request(request).await.expect("response");
    let seen = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf8");
    assert!(
        seen.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("forwarded: for=127.0.0.1;proto=http\n"), "{seen}");
    assert!(!seen.contains("x-drop-me"), "{seen}");
}

/// Sends raw bytes and returns the status line of the answer.
async fn raw_status_line(address: &str, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_4xx() {
    let backend = HttpBackend::start("b").await;
    let (_node, url) = start("round_robin", &[&backend], &[1], "").await;
    let address = url.trim_start_matches("http://");
    assert_eq!(
        raw_status_line(address, b"GARBAGE\r\n\r\n").await,
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        raw_status_line(address, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").await,
        "HTTP/1.1 400 Bad Request"
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    assert_eq!(
        raw_status_line(address, huge.as_bytes()).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(
        raw_status_line(address, request.as_bytes()).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(backend.served(), 0, "nothing malformed reaches the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_and_maintenance_backends_get_no_new_requests() {
    let (a, b, c) = (
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    );
    let bind = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[node]\nid = 1\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\n[[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\", state = \"drain\" }}, {{ address = \"{}\" }}, {{ address = \"{}\", state = \"maintenance\" }}]\n",
        a.address, b.address, c.address
    );
    let _node = Raftlb::start(&config, &[&bind]).await;
    let http = client::http1();
    for _ in 0..10 {
        assert_eq!(
            client::get(&http, &format!("http://{bind}/")).await,
            (200, "b".to_string())
        );
    }
    assert_eq!((a.served(), c.served()), (0, 0));
}
