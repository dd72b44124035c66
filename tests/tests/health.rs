//! Health checks, outlier ejection, panic, slow start, retries and the retry
//! budget, through real `raftlb` processes to real backends that die, fail,
//! hang and come back.

use raftlb_tests::backends::{self, HttpBackend};
use raftlb_tests::client;
use raftlb_tests::cluster::Cluster;
use raftlb_tests::process::Raftlb;
use raftlb_tests::{free_port, wait};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One node, one HTTP listener, pool `app` over `backends` with `pool_extra`
/// TOML lines; `/metrics` on its own port. Returns the node, the listener's
/// URL and the metrics address.
async fn start(backends: &[std::net::SocketAddr], pool_extra: &str) -> (Raftlb, String, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"2s\"\nmetrics = \"{metrics}\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nalgorithm = \"round_robin\"\nbackends = [{}]\n{pool_extra}\n",
        list.join(", ")
    );
    let node = Raftlb::start(&config, &[&bind]).await;
    (node, format!("http://{bind}"), metrics)
}

/// The value of the sample `series` (name and labels, as exposed) on `metrics`.
async fn metric(metrics: &str, series: &str) -> Option<f64> {
    let http = client::http1();
    let (status, text) = client::get(&http, &format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn available(backend: std::net::SocketAddr) -> String {
    format!("raftlb_backend_available{{pool=\"app\",backend=\"{backend}\"}}")
}

async fn wait_metric(metrics: &str, series: &str, value: f64, deadline: Duration) {
    let start = Instant::now();
    loop {
        if metric(metrics, series).await == Some(value) {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{series} did not become {value} within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clients requesting `url` in a loop until stopped, counting failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let http: client::HttpClient = client::http1();
                    while !stop.load(Ordering::Relaxed) {
                        let request = http.get(url.parse().expect("url"));
                        match tokio::time::timeout(Duration::from_secs(5), request).await {
                            Ok(Ok(response)) if response.status() == 200 => {
                                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                let what = match other {
                                    Ok(Ok(response)) => response.status().to_string(),
                                    Ok(Err(e)) => e.to_string(),
                                    Err(_) => "timeout".to_string(),
                                };
                                eprintln!("failed request: {what}");
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Kills one of three slow-answering backends under load, then brings it
/// back; returns (ok, failed) requests, the restarted backend's share of
/// requests in its first second back, and once its slow start is over.
async fn kill_and_restore(retry_attempts: u32) -> (usize, usize, f64, f64) {
    let (a, b) = (
        HttpBackend::start_slow("a").await,
        HttpBackend::start_slow("b").await,
    );
    let c = HttpBackend::start_slow("c").await;
    let c_address = c.address;
    let extra = format!(
        "slow_start = \"3s\"\n\
         [pool.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n\
         [pool.retry]\nattempts = {retry_attempts}\n"
    );
    let (_node, url, metrics) = start(&[a.address, b.address, c.address], &extra).await;
    wait_metric(&metrics, &available(c_address), 1.0, Duration::from_secs(5)).await;
    let load = Load::start(format!("{url}/slow?ms=20"), 8);
    wait::until("traffic on every backend", Duration::from_secs(5), || {
        c.served() > 20
    })
    .await;

    drop(c); // its listener and every connection close
    let killed = Instant::now();
    wait_metric(&metrics, &available(c_address), 0.0, Duration::from_secs(3)).await;
    eprintln!("marked down {:?} after the kill", killed.elapsed());

    let c = HttpBackend::serve(
        "c",
        std::net::TcpListener::bind(c_address).expect("the same port again"),
    );
    wait_metric(&metrics, &available(c_address), 1.0, Duration::from_secs(3)).await;
    let share = |from: (usize, usize), to: (usize, usize)| {
        let (dc, dall) = (to.0 - from.0, to.1 - from.1);
        dc as f64 / dall.max(1) as f64
    };
    let counts = || (c.served(), a.served() + b.served() + c.served());
    let back = counts();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first_second = share(back, counts());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ramped = counts();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_ramp = share(ramped, counts());
    let (ok, failed) = load.finish().await;
    (ok, failed, first_second, after_ramp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_costs_no_idempotent_request_and_ramps_back() {
    let (ok, failed, first_second, after_ramp) = kill_and_restore(1).await;
    eprintln!(
        "with retries: {ok} ok, {failed} failed; restarted backend's share: {first_second:.3} in its first second, {after_ramp:.3} after slow start"
    );
    assert!(ok > 500, "the load ran: {ok} requests");
    assert_eq!(failed, 0, "no idempotent request may fail when one backend dies");
    assert!(
        first_second < 0.2,
        "slow start: the restarted backend took {first_second:.3} of requests in its first second"
    );
    assert!(
        after_ramp > 0.25,
        "after slow start the backend takes its third again: {after_ramp:.3}"
    );
}

/// The figure for the closing note: the same without retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a figure, not a check: run with --ignored --nocapture"]
async fn figure_failed_requests_without_retries() {
    let (ok, failed, _, _) = kill_and_restore(0).await;
    eprintln!("without retries: {ok} ok, {failed} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_and_readmits_and_panic_spreads_over_all() {
    let (a, b, c) = (
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    );
    let extra = "panic_threshold = 50\n\
        [pool.outlier]\nconsecutive_failures = 3\nbase_ejection_time = \"1s\"\nmax_ejection_percent = 100\n\
        [pool.retry]\nattempts = 0\n";
    let (node, url, metrics) = start(&[a.address, b.address, c.address], extra).await;
    let http = client::http1();
    let root = format!("{url}/");
    let get = || client::get(&http, &root);

    c.counters.fail_status.store(500, Ordering::SeqCst);
    let started = Instant::now();
    while metric(&metrics, &available(c.address)).await != Some(0.0) {
        get().await;
        assert!(started.elapsed() < Duration::from_secs(5), "c was never ejected");
    }
    let served = c.served();
    for _ in 0..30 {
        assert_eq!(get().await.0, 200, "an ejected backend gets no request");
    }
    assert_eq!(c.served(), served, "c took requests while ejected");

    c.counters.fail_status.store(0, Ordering::SeqCst);
    wait_metric(&metrics, &available(c.address), 1.0, Duration::from_secs(3)).await;
    for _ in 0..6 {
        assert_eq!(get().await.0, 200);
    }
    assert!(c.served() > served, "c was readmitted");

    // Two of three fail: both are ejected, and the one healthy backend (33 %
    // < 50 %) is not left to carry everything.
    b.counters.fail_status.store(503, Ordering::SeqCst);
    c.counters.fail_status.store(503, Ordering::SeqCst);
    let panic = "raftlb_pool_panic{pool=\"app\"}";
    let started = Instant::now();
    while metric(&metrics, panic).await != Some(1.0) {
        get().await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the pool never panicked"
        );
    }
    let (b_before, c_before) = (b.served(), c.served());
    for _ in 0..9 {
        get().await;
    }
    assert!(
        b.served() > b_before && c.served() > c_before,
        "in panic, traffic goes to every backend, ejected ones too"
    );
    assert!(node.log().contains("pool in panic"), "the panic is logged");
    let ejections = metric(&metrics, "raftlb_outlier_ejections_total{pool=\"app\"}").await;
    assert!(ejections >= Some(3.0), "ejections counted: {ejections:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gets_504_then_is_ejected() {
    let (silent, _hold) = backends::blackhole().await;
    let good = HttpBackend::start("good").await;
    let extra = "response_timeout = \"300ms\"\n\
        [pool.outlier]\nconsecutive_failures = 2\nbase_ejection_time = \"30s\"\n";
    let (_node, url, metrics) = start(&[silent, good.address], extra).await;
    let http = client::http1();
    let mut timeouts = 0;
    let started = Instant::now();
    while metric(&metrics, &available(silent)).await != Some(0.0) {
        let sent = Instant::now();
        let (status, _) = client::get(&http, &format!("{url}/")).await;
        assert!(sent.elapsed() < Duration::from_secs(2), "a request hung");
        match status {
            504 => timeouts += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never ejected");
    }
    assert_eq!(timeouts, 2, "ejected after consecutive_failures timeouts");
    for _ in 0..20 {
        assert_eq!(client::get(&http, &format!("{url}/")).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_every_backend_fails() {
    let (one, _a) = backends::closer().await;
    let (two, _b) = backends::closer().await;
    let extra = "[pool.retry]\nattempts = 2\nbudget_percent = 20\nmin_per_second = 2\n";
    let (_node, url, metrics) = start(&[one.address, two.address], extra).await;
    let load = Load::start(format!("{url}/"), 4);
    let started = Instant::now();
    wait::until("300 requests", Duration::from_secs(20), || {
        load.failed.load(Ordering::Relaxed) >= 300
    })
    .await;
    let (ok, failed) = load.finish().await;
    let seconds = started.elapsed().as_secs_f64();
    let retries = metric(&metrics, "raftlb_retries_total{pool=\"app\"}")
        .await
        .unwrap_or(0.0);
    let refused = metric(&metrics, "raftlb_retries_refused_total{pool=\"app\"}")
        .await
        .unwrap_or(0.0);
    let received = one.received() + two.received();
    eprintln!(
        "{failed} requests failed over {seconds:.1} s: {retries} retries, {refused} refused by the budget; backends saw {received}"
    );
    assert_eq!(ok, 0);
    let budget = 0.2 * failed as f64 + 2.0 * seconds + 1.0;
    assert!(
        retries <= budget,
        "{retries} retries for {failed} requests over {seconds:.1} s; the budget allows {budget:.0}"
    );
    assert!(
        retries >= 1.0 && refused >= 1.0,
        "the budget was used, then refused more"
    );
    assert!(
        received as f64 <= failed as f64 + budget,
        "the backends saw {received} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_verdict_is_committed_and_a_restarted_node_starts_from_it() {
    let healthy = HttpBackend::start("healthy").await;
    let sick = HttpBackend::start("sick").await;
    sick.counters.unhealthy.store(true, Ordering::SeqCst);
    let seed = format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{{HTTP}}\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n\
         [pool.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n",
        healthy.address, sick.address
    );
    let mut cluster = Cluster::start(3, &seed).await;
    let expected = |up: bool| serde_json::json!({"1": up, "2": up, "3": up});
    let started = Instant::now();
    loop {
        // Node 2's own copy, which it restarts from, has every verdict.
        let (status, out, err) = cluster.ctl(1, &["--json", "backend", "list", "--stale"]);
        assert!(status.success(), "ctl backend list: {err}");
        let rows: serde_json::Value = serde_json::from_str(&out).expect("json");
        let health = |i: usize| rows[i]["health"].clone();
        if health(0) == expected(true) && health(1) == expected(false) {
            let (_, table, _) = cluster.ctl(0, &["backend", "list"]);
            eprintln!("{table}");
            assert!(table.contains("1:down 2:down 3:down"), "{table}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "verdicts not committed: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A restarted node sends nothing to the backend it last saw down, not
    // even before its first probe.
    // The log store saves the committed index lazily and the next append
    // flushes it: one more entry, appended on node 2, makes sure the
    // verdicts it applied are known committed after a kill -9.
    let healthy_address = healthy.address.to_string();
    let (status, _, err) = cluster.ctl(0, &["backend", "weight", "app", &healthy_address, "2"]);
    assert!(status.success(), "{err}");
    wait::until("node 2 applied the marker write", Duration::from_secs(10), || {
        let (_, out, _) = cluster.ctl(1, &["--json", "backend", "list", "--stale"]);
        serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|rows| rows[0]["weight"] == 2)
    })
    .await;
    cluster.kill(1);
    cluster.spawn(1);
    cluster.wait_ready(1).await;
    let served = sick.served();
    let http = client::http1();
    let url = format!("http://{}/", cluster.members[1].http);
    for _ in 0..20 {
        let (status, body) = client::get(&http, &url).await;
        assert_eq!((status, body.as_str()), (200, "healthy"));
    }
    assert_eq!(
        sick.served(),
        served,
        "the restarted node sent requests to a known-dead backend"
    );
}
