//! The access log and traffic metrics through a real `raftlb` process:
//! requests with known outcomes (200 from a backend, 404 with no route, a
//! 5xx with the backend down, a retried request, HTTPS with SNI, a sticky
//! pool's miss then hit) each leave one json line with every field right;
//! combined lines match Apache's combined format; SIGUSR1 after a rename
//! moves the log to a new file and loses no line; after N requests of
//! known statuses the counters and histograms say N per class, and
//! `promtool check metrics` accepts the scrape.

use raftlb_tests::backends::{HttpBackend, closer};
use raftlb_tests::free_port;
use raftlb_tests::process::{Raftlb, TempDir};
use raftlb_tests::wait;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What curl saw of one request: status, body bytes, response headers.
#[derive(Debug)]
struct Seen {
    status: u16,
    body_bytes: u64,
}

/// curl ARGS… (quiet, 5 s at most, body discarded).
async fn curl(args: &[&str]) -> Seen {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
            ])
            .args(&args)
            .output()
            .expect("run curl")
    })
    .await
    .expect("curl task");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut words = text.split_whitespace();
    let status = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("a status from curl");
    let body_bytes = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("a size from curl");
    Seen { status, body_bytes }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    wait::until(
        &format!("{n} lines in {}", path.display()),
        Duration::from_secs(10),
        || lines(path).len() >= n,
    )
    .await;
    lines(path)
}

/// A self-signed certificate for `name`, as PEM files in `dir`.
fn certificate(dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (
        dir.write("site.pem", &cert.pem()),
        dir.write("site.key", &key.serialize_pem()),
    )
}

fn listener(name: &str, protocol: &str, port: u16, pool: Option<&str>) -> String {
    let pool = pool.map_or(String::new(), |p| format!("pool = \"{p}\"\n"));
    format!(
        "[[listener]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nbind = \"127.0.0.1:{port}\"\n{pool}\n"
    )
}

fn pool(name: &str, backends: &[String], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    format!(
        "[[pool]]\nname = \"{name}\"\nalgorithm = \"round_robin\"\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A port nothing listens on: a backend that is down.
fn dead_backend() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_hold_every_field_of_each_outcome() {
    let good = HttpBackend::start("good").await;
    let (flaky, _closer) = closer().await;
    let dir = TempDir::new("access-json");
    let (cert, key) = certificate(&dir, "a.example.test");
    let log = dir.path().join("access.log");
    let ports: HashMap<&str, u16> = ["web", "routed", "down", "retry", "secure", "stuck"]
        .into_iter()
        .map(|name| (name, free_port()))
        .collect();
    let good_address = good.address.to_string();
    let config = format!(
        "[node]\nid = 1\naccess_log = {{ format = \"json\", path = \"{}\" }}\n\n\
         [[certificate]]\nname = \"site\"\ncert = \"{}\"\nkey = \"{}\"\n\n{}{}\
         [[listener.route]]\nmatch = {{ path_prefix = \"/r\" }}\npool = \"app\"\n\n{}{}{}{}{}{}{}{}",
        log.display(),
        cert.display(),
        key.display(),
        listener("web", "http", ports["web"], Some("app")),
        listener("routed", "http", ports["routed"], None),
        listener("down", "http", ports["down"], Some("dead")),
        listener("retry", "http", ports["retry"], Some("flaky")),
        listener("secure", "https", ports["secure"], Some("app")),
        listener("stuck", "http", ports["stuck"], Some("sticky")),
        pool("app", std::slice::from_ref(&good_address), ""),
        pool("dead", &[dead_backend()], ""),
        pool(
            "flaky",
            &[flaky.address.to_string(), good_address.clone()],
            "[pool.retry]\nattempts = 1\nbudget_percent = 100\n"
        ),
        pool(
            "sticky",
            std::slice::from_ref(&good_address),
            "[pool.sticky]\nkind = \"header\"\nname = \"X-Session\"\nttl = \"60s\"\n"
        ),
    );
    let ready: Vec<String> = ports.values().map(|p| format!("127.0.0.1:{p}")).collect();
    let ready: Vec<&str> = ready.iter().map(String::as_str).collect();
    let _node = Raftlb::start(&config, &ready).await;
    let url = |name: &str, path: &str| format!("http://127.0.0.1:{}{path}", ports[name]);
    let rid = |n: u32| format!("X-Request-Id: {n}");

    // (request id, what curl saw) of each request, in order.
    let mut sent: Vec<(String, Seen)> = Vec::new();
    let ok = curl(&[
        "-H",
        &rid(1),
        "-H",
        "User-Agent: test \"agent\"",
        "-H",
        "Referer: http://r.test/",
        &url("web", "/hello?x=1"),
    ])
    .await;
    assert_eq!(ok.status, 200);
    sent.push(("1".into(), ok));
    // An id that is not a sane token is replaced.
    let no_route = curl(&["-H", "X-Request-Id: not sane!", &url("routed", "/elsewhere")]).await;
    assert_eq!(no_route.status, 404);
    let down = curl(&["-H", &rid(3), &url("down", "/")]).await;
    assert!(down.status >= 500, "a dead backend's request fails: {down:?}");
    sent.push(("3".into(), down));
    // Round robin alternates: one of two requests meets the closer first.
    for n in [4, 5] {
        let retried = curl(&["-H", &rid(n), &url("retry", "/")]).await;
        assert_eq!(retried.status, 200, "a failed try is retried on the good backend");
        sent.push((n.to_string(), retried));
    }
    let port = ports["secure"].to_string();
    let secure = curl(&[
        "-k",
        "--http1.1",
        "-H",
        &rid(6),
        "--resolve",
        &format!("a.example.test:{port}:127.0.0.1"),
        &format!("https://a.example.test:{port}/s"),
    ])
    .await;
    assert_eq!(secure.status, 200);
    sent.push(("6".into(), secure));
    for n in [7, 8] {
        let stuck = curl(&["-H", &rid(n), "-H", "X-Session: s1", &url("stuck", "/")]).await;
        assert_eq!(stuck.status, 200);
        sent.push((n.to_string(), stuck));
    }

    let all = wait_lines(&log, sent.len() + 1).await;
    let parsed: Vec<Value> = all
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let by_id: HashMap<String, &Value> = parsed
        .iter()
        .map(|v| (v["request_id"].as_str().expect("request_id").to_string(), v))
        .collect();
    assert_eq!(by_id.len(), parsed.len(), "one line per request, ids unique");
    let time = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").expect("regex");
    for line in &parsed {
        // Every documented field, whatever the outcome.
        for field in [
            "time",
            "request_id",
            "client",
            "client_port",
            "listener",
            "pool",
            "backend",
            "method",
            "path",
            "protocol",
            "status",
            "bytes_received",
            "bytes_sent",
            "connect_seconds",
            "first_byte_seconds",
            "total_seconds",
            "tls_version",
            "sni",
            "sticky",
            "retries",
            "referer",
            "user_agent",
        ] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
        assert!(time.is_match(line["time"].as_str().expect("time")), "{line}");
        assert_eq!(line["client"], "127.0.0.1");
        assert!(line["client_port"].as_u64().is_some_and(|p| p > 0));
        assert_eq!(line["method"], "GET");
        assert_eq!(line["protocol"], "HTTP/1.1");
        assert!(
            line["total_seconds"]
                .as_f64()
                .is_some_and(|t| (0.0..5.0).contains(&t))
        );
        if let Some(first_byte) = line["first_byte_seconds"].as_f64() {
            assert!(
                first_byte <= line["total_seconds"].as_f64().unwrap_or(0.0),
                "{line}"
            );
        }
    }
    for (id, seen) in &sent {
        let line = by_id
            .get(id)
            .unwrap_or_else(|| panic!("no line for request {id}: {all:#?}"));
        assert_eq!(line["status"], seen.status, "{line}");
        assert_eq!(line["bytes_sent"], seen.body_bytes, "{line}");
    }

    let ok = by_id["1"];
    assert_eq!(ok["listener"], "web");
    assert_eq!(ok["pool"], "app");
    assert_eq!(ok["backend"], good_address);
    assert_eq!(ok["path"], "/hello?x=1");
    assert_eq!(ok["user_agent"], "test \"agent\"");
    assert_eq!(ok["referer"], "http://r.test/");
    assert_eq!(ok["sticky"], "none");
    assert_eq!(
        (ok["retries"].as_u64(), ok["bytes_received"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(ok["connect_seconds"].is_f64() && ok["first_byte_seconds"].is_f64());
    assert!(ok["tls_version"].is_null() && ok["sni"].is_null());
    // The backend got the client's id.
    let ids: Vec<u64> = good
        .counters
        .ids
        .lock()
        .expect("ids")
        .iter()
        .map(|l| l.id)
        .collect();
    assert!(ids.contains(&1), "backend saw ids {ids:?}");

    let no_route = parsed
        .iter()
        .find(|l| l["listener"] == "routed")
        .expect("the 404's line");
    assert_eq!(no_route["status"], 404);
    assert!(
        no_route["pool"].is_null() && no_route["backend"].is_null(),
        "{no_route}"
    );
    let generated = no_route["request_id"].as_str().expect("id");
    assert!(
        generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "a new id: {generated}"
    );
    assert!(
        no_route["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.starts_with("curl/"))
    );

    let down = by_id["3"];
    assert_eq!(
        (down["listener"].as_str(), down["pool"].as_str()),
        (Some("down"), Some("dead"))
    );
    assert!(
        down["backend"].is_null() && down["first_byte_seconds"].is_null(),
        "{down}"
    );

    let retried: Vec<&&Value> = ["4", "5"].iter().map(|id| &by_id[*id]).collect();
    let retries: Vec<u64> = retried.iter().filter_map(|l| l["retries"].as_u64()).collect();
    assert!(
        retries.len() == 2 && retries.contains(&1) && retries.iter().all(|r| *r <= 1),
        "at least one met the closer and was retried once: {retried:?}"
    );
    assert!(retried.iter().all(|l| l["backend"] == good_address.as_str()));

    let secure = by_id["6"];
    assert_eq!(secure["listener"], "secure");
    assert_eq!(secure["sni"], "a.example.test");
    assert!(
        matches!(secure["tls_version"].as_str(), Some("TLSv1.3" | "TLSv1.2")),
        "{secure}"
    );
    assert_eq!(secure["path"], "/s");

    assert_eq!(by_id["7"]["sticky"], "miss", "a new session");
    assert_eq!(by_id["8"]["sticky"], "hit", "its backend again");
}

/// Apache's combined format, then the fields raftlb appends.
const COMBINED: &str = r#"^(\S+) - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "(?:[^"\\]|\\.)*" (\d{3}|-) (\d+|-) "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*" rt=\d+\.\d{3} uct=(?:\d+\.\d{3}|-) uht=(?:\d+\.\d{3}|-) rid=\S+ backend=\S+ listener=\S+ pool=\S+ sticky=(?:hit|miss|none) retries=\d+ tls=\S+ sni=\S+$"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_parse_and_sigusr1_moves_to_a_new_file_losing_none() {
    let good = HttpBackend::start("good").await;
    let dir = TempDir::new("access-combined");
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let (web, tcp) = (free_port(), free_port());
    let config = format!(
        "[node]\nid = 1\naccess_log = {{ format = \"combined\", path = \"{}\" }}\n\n{}{}{}",
        log.display(),
        listener("web", "http", web, Some("app")),
        listener("plain", "tcp", tcp, Some("app")),
        pool("app", &[good.address.to_string()], ""),
    );
    let (web_address, tcp_address) = (format!("127.0.0.1:{web}"), format!("127.0.0.1:{tcp}"));
    let node = Raftlb::start(&config, &[&web_address, &tcp_address]).await;
    let combined = regex::Regex::new(COMBINED).expect("regex");

    const BEFORE: usize = 20;
    const AFTER: usize = 15;
    for n in 0..BEFORE {
        // Quotes and a byte outside ASCII in the user agent, escaped.
        let agent = format!("User-Agent: agent \"{n}\" caf\u{e9}");
        assert_eq!(
            curl(&["-H", &agent, &format!("http://{web_address}/b?n={n}")])
                .await
                .status,
            200
        );
    }
    // An L4 connection (curl speaks HTTP through it to the backend); the
    // start's readiness probe made one too, with no bytes.
    assert_eq!(curl(&[&format!("http://{tcp_address}/")]).await.status, 200);
    let before = wait_lines(&log, BEFORE + 2).await;
    for line in &before {
        let parts = combined
            .captures(line)
            .unwrap_or_else(|| panic!("not combined: {line}"));
        assert_eq!(&parts[1], "127.0.0.1");
    }
    let first = r#""GET /b?n=0 HTTP/1.1" 200 4 "-" "agent \"0\" caf\xC3\xA9" "#;
    assert!(before.iter().any(|l| l.contains(first)), "{before:#?}");
    let tcp_bytes: Vec<u64> = before
        .iter()
        .filter(|l| l.contains("\"- - TCP\" - ") && l.contains("listener=plain"))
        .filter_map(|l| l.split(' ').nth(9)?.parse().ok())
        .collect();
    assert!(
        tcp_bytes.len() == 2 && tcp_bytes.iter().any(|b| *b > 0),
        "the TCP connections' lines: {before:#?}"
    );

    std::fs::rename(&log, &rotated).expect("rotate");
    node.signal("USR1");
    wait::until("the access log reopened", Duration::from_secs(10), || {
        node.log().contains("access log reopened")
    })
    .await;
    for n in 0..AFTER {
        assert_eq!(
            curl(&[&format!("http://{web_address}/a?n={n}")]).await.status,
            200
        );
    }
    let after = wait_lines(&log, AFTER).await;
    let old = lines(&rotated);
    assert_eq!(
        old.len(),
        BEFORE + 2,
        "the old file kept exactly the earlier lines"
    );
    assert_eq!(after.len(), AFTER, "the new file has exactly the later ones");
    assert!(
        after
            .iter()
            .all(|l| combined.is_match(l) && l.contains("GET /a?n="))
    );
}

/// One sample's value from an exposition, by its exact name and labels.
fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_match_the_requests_and_promtool_accepts_them() {
    let good = HttpBackend::start("good").await;
    let (web, routed, metrics) = (free_port(), free_port(), free_port());
    let config = format!(
        "[node]\nid = 1\nmetrics = \"127.0.0.1:{metrics}\"\n\n{}{}[[listener.route]]\nmatch = {{ path_prefix = \"/r\" }}\npool = \"app\"\n\n{}",
        listener("web", "http", web, Some("app")),
        listener("routed", "http", routed, None),
        pool("app", &[good.address.to_string()], ""),
    );
    let metrics_address = format!("127.0.0.1:{metrics}");
    let _node = Raftlb::start(&config, &[&format!("127.0.0.1:{web}"), &metrics_address]).await;
    const OK: usize = 7;
    const NOT_FOUND: usize = 4;
    const FAILED: usize = 3;
    let scrape = || {
        let output = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://{metrics_address}/metrics"),
            ])
            .output()
            .expect("curl /metrics");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The start's readiness probe was a connection too (counted once the
    // node has taken it from the backlog).
    let connections = "raftlb_listener_connections_total{listener=\"web\"}";
    wait::until("the readiness probe counted", Duration::from_secs(10), || {
        sample(&scrape(), connections) == 1.0
    })
    .await;
    let probes = 1;
    for _ in 0..OK {
        assert_eq!(curl(&[&format!("http://127.0.0.1:{web}/")]).await.status, 200);
    }
    for _ in 0..NOT_FOUND {
        assert_eq!(
            curl(&[&format!("http://127.0.0.1:{routed}/none")]).await.status,
            404
        );
    }
    good.counters
        .fail_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..FAILED {
        assert_eq!(curl(&[&format!("http://127.0.0.1:{web}/")]).await.status, 503);
    }
    // A response is counted once its body is done, a moment after the client has it.
    let expected_total = (OK + NOT_FOUND + FAILED) as f64;
    let total = |m: &str| {
        sample(
            m,
            "raftlb_listener_request_duration_seconds_count{listener=\"web\"}",
        ) + sample(
            m,
            "raftlb_listener_request_duration_seconds_count{listener=\"routed\"}",
        )
    };
    wait::until("every request counted", Duration::from_secs(10), || {
        total(&scrape()) == expected_total
    })
    .await;
    let m = scrape();
    let backend = good.address;
    for (series, want) in [
        (
            "raftlb_listener_requests_total{listener=\"web\",class=\"2xx\"}",
            OK,
        ),
        (
            "raftlb_listener_requests_total{listener=\"web\",class=\"5xx\"}",
            FAILED,
        ),
        (
            "raftlb_listener_requests_total{listener=\"web\",class=\"4xx\"}",
            0,
        ),
        (
            "raftlb_listener_requests_total{listener=\"routed\",class=\"4xx\"}",
            NOT_FOUND,
        ),
        (
            "raftlb_listener_request_duration_seconds_count{listener=\"web\"}",
            OK + FAILED,
        ),
        (
            "raftlb_listener_request_duration_seconds_bucket{listener=\"web\",le=\"+Inf\"}",
            OK + FAILED,
        ),
        ("raftlb_pool_requests_total{pool=\"app\",class=\"2xx\"}", OK),
        ("raftlb_pool_requests_total{pool=\"app\",class=\"5xx\"}", FAILED),
        (
            &format!("raftlb_backend_responses_total{{pool=\"app\",backend=\"{backend}\",class=\"2xx\"}}"),
            OK,
        ),
        (
            &format!("raftlb_backend_responses_total{{pool=\"app\",backend=\"{backend}\",class=\"5xx\"}}"),
            FAILED,
        ),
        (
            &format!("raftlb_backend_response_duration_seconds_count{{pool=\"app\",backend=\"{backend}\"}}"),
            OK + FAILED,
        ),
        (
            &format!("raftlb_backend_failures_total{{pool=\"app\",backend=\"{backend}\"}}"),
            0,
        ),
        (connections, probes + OK + FAILED),
        (
            "raftlb_listener_connections{listener=\"web\",state=\"active\"}",
            0,
        ),
        ("raftlb_access_log_dropped_total", 0),
    ] {
        assert_eq!(sample(&m, series), want as f64, "{series}\n{m}");
    }
    println!(
        "traffic metrics: {OK} 2xx, {FAILED} 5xx, {NOT_FOUND} 404 counted exactly; web's request duration sum {:.4} s",
        sample(
            &m,
            "raftlb_listener_request_duration_seconds_sum{listener=\"web\"}"
        )
    );

    match Command::new("promtool").arg("--version").output() {
        Ok(_) => {
            let dir = TempDir::new("promtool");
            let file = dir.write("metrics.txt", &m);
            let output = Command::new("sh")
                .arg("-c")
                .arg(format!("promtool check metrics < {}", file.display()))
                .output()
                .expect("run promtool");
            assert!(
                output.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Err(e) => {
            assert!(
                std::env::var("RAFTLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "promtool is required (RAFTLB_REQUIRE_TOOLS=1) but cannot run: {e}"
            );
            eprintln!(
                "SKIPPED promtool check metrics: promtool cannot run ({e}); install Debian's prometheus package"
            );
        }
    }
}
