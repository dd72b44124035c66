//! Hostile clients against real nodes, sources on loopback (127.0.0.50 is
//! the attacker, 127.0.0.60 is not): an ACL added through `ctl` on one node
//! resets the denied source at accept on every node within a second, and
//! removing it lets it back; limits changed through `ctl` apply to the next
//! connection; HTTP/2 rapid reset gets GOAWAY. (Floods: `floods.rs`.)

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::sources::{connect_from, get_from, is_reset, refusals};
use raftlb_tests::{python_module_or_skip, wait};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Loopback sources of the tests that need no namespaces.
const ATTACKER: [u8; 4] = [127, 0, 0, 50];
const USER: [u8; 4] = [127, 0, 0, 60];

async fn metrics_of(cluster: &Cluster, index: usize) -> String {
    let url = format!("http://127.0.0.{}:{}/metrics", index + 1, cluster.metrics_port);
    raftlb_tests::client::get(&raftlb_tests::client::http1(), &url)
        .await
        .1
}

fn ctl_ok(cluster: &Cluster, index: usize, args: &[&str]) -> String {
    let (status, out, err) = cluster.ctl(index, args);
    assert!(status.success(), "ctl {args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_written_on_one_node_resets_the_source_everywhere_within_a_second() {
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let listeners: Vec<SocketAddr> = cluster
        .members
        .iter()
        .map(|m| m.http.parse().expect("address"))
        .collect();
    for &to in &listeners {
        assert_eq!(get_from(ATTACKER, to).0, Some(200));
    }

    let out = ctl_ok(&cluster, 1, &["acl", "add", "web", "--deny", "127.0.0.48/29"]);
    let written = Instant::now();
    assert!(out.contains("1 rule set at log index"), "{out}");
    for &to in &listeners {
        let denied = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if get_from(ATTACKER, to).0.is_none() {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        })
        .await
        .expect("probe");
        let at = denied.unwrap_or_else(|| panic!("{to} still serves the denied source 1 s after the write"));
        eprintln!("{to} denies the source {:?} after ctl returned", at - written);
        // Denied at accept: reset, nothing to read, while another source is served.
        assert_eq!(get_from(ATTACKER, to).0, None);
        assert_eq!(get_from(USER, to).0, Some(200));
    }
    let list = ctl_ok(&cluster, 0, &["acl", "list", "web"]);
    assert!(list.contains("127.0.0.48/29") && list.contains("deny"), "{list}");
    let metrics = metrics_of(&cluster, 2).await;
    assert!(refusals(&metrics, "acl") >= 1, "{metrics}");

    ctl_ok(&cluster, 2, &["acl", "remove", "web", "127.0.0.48/29"]);
    for &to in &listeners {
        let allowed = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if get_from(ATTACKER, to).0 == Some(200) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        })
        .await
        .expect("probe");
        assert!(
            allowed,
            "{to} still denies the source 1 s after the rule was removed"
        );
    }
    let list = ctl_ok(&cluster, 0, &["acl", "list", "web"]);
    assert!(list.contains("every source is allowed"), "{list}");
}

/// 100 000 rules from a file, in one entry: the denied source is reset
/// everywhere, the other still served, no slower than before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_rules_from_a_file_commit_as_one_entry() {
    let backend = HttpBackend::start("a").await;
    // A 1–2 MB entry: see `Cluster::start_timed`.
    let cluster = Cluster::start_timed(3, &http_seed("round_robin", &[backend.address]), ("1s", "9s")).await;
    let listeners: Vec<SocketAddr> = cluster
        .members
        .iter()
        .map(|m| m.http.parse().expect("address"))
        .collect();
    let median = |to: SocketAddr| {
        let mut times: Vec<Duration> = (0..50).map(|_| get_from(USER, to).1).collect();
        times.sort();
        times[25]
    };
    let before: Vec<Duration> = listeners.iter().map(|&to| median(to)).collect();
    let dir = raftlb_tests::process::TempDir::new("acl");
    let mut text: String = (0..99_999u32)
        .map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0A00_0000 | i)))
        .collect();
    text.push_str("127.0.0.50\n");
    let file = dir.write("deny.txt", &text);
    let started = Instant::now();
    let out = ctl_ok(
        &cluster,
        0,
        &[
            "--timeout",
            "60s",
            "acl",
            "add",
            "web",
            "--deny",
            "--file",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(out.contains("100000 rules set"), "{out}");
    let committed = started.elapsed();
    for &to in &listeners {
        let to_probe = to;
        let denied = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if get_from(ATTACKER, to_probe).0.is_none() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        })
        .await
        .expect("probe");
        assert!(denied, "{to} serves a source of the 100 000-rule ACL");
    }
    let after: Vec<Duration> = listeners.iter().map(|&to| median(to)).collect();
    println!(
        "100 000 ACL rules: ctl acl add --file committed in {committed:?} (debug build); \
         the user's median request {before:?} before, {after:?} after"
    );
    // The lookup costs the same with 100 000 rules (benches/admission.rs);
    // here, only that nothing got grossly slower.
    for (b, a) in before.iter().zip(&after) {
        assert!(
            *a < *b * 3 + Duration::from_millis(5),
            "{before:?} before, {after:?} after"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_changed_through_ctl_apply_to_the_next_connection() {
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(1, &http_seed("round_robin", &[backend.address])).await;
    let to: SocketAddr = cluster.members[0].http.parse().expect("address");
    let out = ctl_ok(&cluster, 0, &["listener", "limits", "web", "connections=20"]);
    assert!(out.contains("limits of listener web set"), "{out}");
    let shown = ctl_ok(&cluster, 0, &["listener", "limits", "web"]);
    assert!(shown.contains("connections") && shown.contains("20"), "{shown}");
    // Applied here once a 21st held connection is reset.
    wait::until("the new limits apply", Duration::from_secs(5), || {
        let held: Vec<_> = (0..21)
            .filter_map(|_| connect_from(USER, to, Duration::from_secs(1)).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        held.iter().any(is_reset)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_gets_goaway_and_other_clients_are_served() {
    if !python_module_or_skip("http2_rapid_reset_gets_goaway_and_other_clients_are_served", "h2") {
        return;
    }
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(1, &http_seed("round_robin", &[backend.address])).await;
    let to: SocketAddr = cluster.members[0].http.parse().expect("address");
    let node = cluster.members[0].process.as_ref().expect("node");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rapid_reset.py");
    let attack = move || {
        let out = std::process::Command::new("python3")
            .args([
                script,
                &to.ip().to_string(),
                &to.port().to_string(),
                "100000",
                "10",
            ])
            .output()
            .expect("run the rapid-reset client");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rss_before = node.rss_kib();
    let started = Instant::now();
    let mut attacks = Vec::new();
    // 20 attacking connections, one after the other, for at most 10 s each.
    for _ in 0..20 {
        let report = tokio::task::spawn_blocking(attack).await.expect("attack");
        assert!(report.contains("\"goaway\": true"), "no GOAWAY: {report}");
        assert!(
            report.contains("\"error_code\": 11"),
            "not ENHANCE_YOUR_CALM: {report}"
        );
        let field = |name: &str| -> f64 {
            report
                .split(&format!("\"{name}\": "))
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {report}"))
        };
        // The count includes what the client sent before it read the GOAWAY.
        let (streams, seconds) = (field("streams") as u64, field("seconds"));
        assert!(
            streams < 10_000 && seconds < 1.0,
            "{streams} streams in {seconds} s before GOAWAY"
        );
        attacks.push(streams);
        // Another client is served between attacks.
        assert_eq!(get_from(USER, to).0, Some(200));
    }
    let grown = node.rss_kib().saturating_sub(rss_before);
    println!(
        "rapid reset: 20 connections each got GOAWAY (ENHANCE_YOUR_CALM) after {}–{} streams, in {:?} in all; node RSS grew {grown} KiB",
        attacks.iter().min().unwrap_or(&0),
        attacks.iter().max().unwrap_or(&0),
        started.elapsed()
    );
    assert!(grown < 32 * 1024, "RSS grew {grown} KiB under rapid reset");
}
