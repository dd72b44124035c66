//! The load-aware and hashing algorithms through real `raftlb` processes:
//! `random_two` and `peak_ewma` send less to a slow backend than round
//! robin does, and `maglev` sends a key to the same backend whichever node
//! of a cluster it goes through.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client::{self, HttpClient};
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::free_port;
use raftlb_tests::process::Raftlb;

const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: usize = 60;
/// What the slow backend adds to each request.
const SLOW_MS: u64 = 50;

/// The share of `CLIENTS` × `REQUESTS_PER_CLIENT` requests, sent by
/// concurrent keep-alive clients through a pool balanced by `algorithm`,
/// that a backend 50 ms slower than its two peers served.
async fn slow_share(algorithm: &str) -> f64 {
    let slow = HttpBackend::start_slow("slow").await;
    let fast = [HttpBackend::start("a").await, HttpBackend::start("b").await];
    let bind = format!("127.0.0.1:{}", free_port());
    let backends: Vec<String> = [&slow, &fast[0], &fast[1]]
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.address))
        .collect();
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"5s\"\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\naccess_log = false\n\n[[pool]]\nname = \"app\"\nalgorithm = \"{algorithm}\"\nbackends = [{}]\n",
        backends.join(", ")
    );
    let _node = Raftlb::start(&config, &[&bind]).await;
    let url = format!("http://{bind}/slow?ms={SLOW_MS}");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = client::http1();
                for _ in 0..REQUESTS_PER_CLIENT {
                    assert_eq!(client::get(&http, &url).await.0, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }
    let total = slow.served() + fast[0].served() + fast[1].served();
    assert_eq!(total, CLIENTS * REQUESTS_PER_CLIENT, "every request served once");
    let share = slow.served() as f64 / total as f64;
    eprintln!("{algorithm}: the slow backend served {share:.3} of {total} requests");
    share
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_aware_algorithms_avoid_a_slow_backend() {
    let round_robin = slow_share("round_robin").await;
    assert!(
        (0.3..=0.37).contains(&round_robin),
        "round robin gives each of 3 backends a third: {round_robin:.3}"
    );
    for algorithm in ["random_two", "peak_ewma"] {
        let share = slow_share(algorithm).await;
        assert!(
            share < 0.7 * round_robin,
            "{algorithm} sent {share:.3} of requests to the slow backend, round robin {round_robin:.3}"
        );
    }
}

/// GETs `url` with `X-User: user`; the body names the backend.
async fn get_as(http: &HttpClient, url: &str, user: &str) -> String {
    let request = Request::get(url)
        .header("X-User", user)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = http.request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_sends_a_key_to_one_backend_through_every_node() {
    let backends = [
        HttpBackend::start("b1").await,
        HttpBackend::start("b2").await,
        HttpBackend::start("b3").await,
    ];
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let seed = format!(
        "{}hash_key = \"header:X-User\"\n",
        http_seed("maglev", &addresses)
    );
    let cluster = Cluster::start(3, &seed).await;
    let http = client::http1();
    let mut per_backend = std::collections::BTreeMap::<String, usize>::new();
    for k in 0..200 {
        let user = format!("user-{k}");
        let mut seen = Vec::new();
        for member in &cluster.members {
            seen.push(get_as(&http, &format!("http://{}/", member.http), &user).await);
        }
        assert!(
            seen.iter().all(|b| *b == seen[0]),
            "{user} reached different backends through nodes 1, 2, 3: {seen:?}"
        );
        // And again, through node 1: a key stays put.
        assert_eq!(
            get_as(&http, &format!("http://{}/", cluster.members[0].http), &user).await,
            seen[0]
        );
        *per_backend.entry(seen[0].clone()).or_default() += 1;
    }
    assert_eq!(
        per_backend.len(),
        3,
        "keys spread over every backend: {per_backend:?}"
    );
    assert!(per_backend.values().all(|&n| n >= 40), "{per_backend:?}");

    // Every node built the identical table.
    let mut fingerprints = Vec::new();
    for id in 1..=3 {
        let url = format!("http://127.0.0.{id}:{}/metrics", cluster.metrics_port);
        let (_, text) = client::get(&http, &url).await;
        let line = text
            .lines()
            .find(|l| l.starts_with("raftlb_balancer_table{pool=\"app\""))
            .unwrap_or_else(|| panic!("no table fingerprint on node {id}:\n{text}"))
            .to_string();
        fingerprints.push(line);
    }
    eprintln!("{fingerprints:?}");
    assert!(
        fingerprints.iter().all(|f| *f == fingerprints[0]),
        "the nodes built different tables: {fingerprints:?}"
    );
}
