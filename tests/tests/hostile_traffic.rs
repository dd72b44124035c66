//! Hostile clients against real nodes: an ACL added through `ctl` on one
//! node resets the denied source at accept on every node within a second,
//! and removing it lets it back (sources on loopback: 127.0.0.50 is denied,
//! 127.0.0.60 is not); limits changed through `ctl` apply to the next
//! connection; a connection flood and a request flood from one host (a
//! network namespace; root) are refused (reset; `429` with `Retry-After`)
//! and counted in `/metrics`, while another host keeps ≥ 99.9 % success at
//! a p99 within twice its unloaded p99; HTTP/2 rapid reset gets GOAWAY.
//! Every load loop is bounded in time.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::netns::{self, Lab};
use raftlb_tests::process::Raftlb;
use raftlb_tests::wait;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Loopback sources of the tests that need no namespaces.
const ATTACKER: [u8; 4] = [127, 0, 0, 50];
const USER: [u8; 4] = [127, 0, 0, 60];

/// A TCP connection to `to` from source address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::from(from), 0).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

/// Whether the node has reset (or closed) `stream` by now.
fn is_reset(stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let reset = match (&*stream).read(&mut [0u8; 1]) {
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        Ok(_) => true,
    };
    let _ = stream.set_nonblocking(false);
    reset
}

/// One `GET /` on a new connection from `from`: its status line's code
/// (`None`: reset or closed before an answer) and how long it took.
fn get_from(from: [u8; 4], to: SocketAddr) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let answer = (|| {
        let mut stream = connect_from(from, to, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
    })();
    (answer, started.elapsed())
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(index).copied().unwrap_or_default()
}

/// The value of `raftlb_client_refusals_total` for `reason` on listener web.
fn refusals(metrics: &str, reason: &str) -> u64 {
    let label = format!("raftlb_client_refusals_total{{listener=\"web\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&label)?.trim().parse().ok())
        .unwrap_or(0)
}

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
    let cluster = Cluster::start_timed(3, &http_seed("round_robin", &[backend.address]), ("1s", "3s")).await;
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

/// What the attacker's two floods saw.
#[derive(Debug, Default)]
struct Flood {
    connections_reset: AtomicU64,
    connections_served: AtomicU64,
    ok: AtomicU64,
    too_many: AtomicU64,
    retry_after: AtomicU64,
}

/// Holds up to `hold` connections from the attacker, opening `per_second`
/// a second, until `stop`: those the node resets are counted, the rest
/// kept open (a slot frees when one is reset or closed).
fn connection_flood(
    from: [u8; 4],
    to: SocketAddr,
    hold: usize,
    per_second: u32,
    flood: &Flood,
    stop: &AtomicBool,
) {
    let mut held = Vec::new();
    let pause = Duration::from_secs(1) / per_second;
    while !stop.load(Relaxed) {
        if held.len() < hold
            && let Ok(stream) = connect_from(from, to, Duration::from_millis(200))
        {
            held.push(stream);
        }
        held.retain(|stream| {
            let reset = is_reset(stream);
            if reset {
                flood.connections_reset.fetch_add(1, Relaxed);
            }
            !reset
        });
        std::thread::sleep(pause);
    }
    flood.connections_served.store(held.len() as u64, Relaxed);
}

/// Sends `per_second` pipelined requests a second on one keep-alive
/// connection until `stop`, counting `200`s and `429`s.
fn request_flood(from: [u8; 4], to: SocketAddr, per_second: u32, flood: &Flood, stop: &AtomicBool) {
    const BATCH: u32 = 20;
    let request = b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n";
    while !stop.load(Relaxed) {
        let Ok(mut stream) = connect_from(from, to, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        let started = Instant::now();
        let mut sent = 0u32;
        while !stop.load(Relaxed) {
            if stream.write_all(&request.repeat(BATCH as usize)).is_err() {
                break;
            }
            sent += BATCH;
            if read_responses(&mut reader, BATCH, flood).is_none() {
                break;
            }
            let due = Duration::from_secs(1) * sent / per_second;
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// Reads `count` responses (heads and their `Content-Length` bodies).
fn read_responses(reader: &mut impl std::io::BufRead, count: u32, flood: &Flood) -> Option<()> {
    for _ in 0..count {
        let mut line = String::new();
        reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
        let status: u16 = line.get(9..12)?.parse().ok()?;
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).ok().filter(|n| *n > 0)?;
            let lower = header.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().ok()?;
            }
            if lower.starts_with("retry-after:") {
                flood.retry_after.fetch_add(1, Relaxed);
            }
            if header == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).ok()?;
        match status {
            200 => flood.ok.fetch_add(1, Relaxed),
            429 => flood.too_many.fetch_add(1, Relaxed),
            _ => return None,
        };
    }
    Some(())
}

/// The user's requests, one every 10 ms on a new connection (below the
/// per-source limits: about 90 a second), for `length`.
fn user_load(from: [u8; 4], to: SocketAddr, length: Duration) -> Vec<(Option<u16>, Duration)> {
    let started = Instant::now();
    let mut results = Vec::new();
    while started.elapsed() < length {
        results.push(get_from(from, to));
        std::thread::sleep(Duration::from_millis(10));
    }
    results
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

/// `GET /metrics` at `to`, from a thread on host `ns`.
fn metrics_from(ns: &str, to: SocketAddr) -> String {
    netns::on_host(ns, move || {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("metrics connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            .expect("metrics request");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    })
}

/// The attacker and the user are hosts of their own (network namespaces,
/// 198.18.0.2 and .3) in front of a node on 198.18.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_from_one_host_leave_another_served() {
    let test = "floods_from_one_host_leave_another_served";
    if !raftlb_tests::root_or_skip(test, "build network namespaces") {
        return;
    }
    let lab = Lab::build(&["lb", "attacker", "user"]);
    let (lb_ns, attacker_ns, user_ns) = (lab.ns("lb"), lab.ns("attacker"), lab.ns("user"));
    let (attacker, user) = (lab.address("attacker").octets(), lab.address("user").octets());
    let to = SocketAddr::new(lab.address("lb").into(), 8080);
    let metrics = SocketAddr::new(lab.address("lb").into(), 9100);
    // The backend listens on the node's host, on its loopback.
    let backend = HttpBackend::serve(
        "a",
        netns::on_host(&lb_ns, || {
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend")
        }),
    );
    let config = format!(
        "[node]\nid = 1\nmetrics = \"{metrics}\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{to}\"\npool = \"app\"\n\
         [listener.limits]\nconnections = 20\nconnection_rate = 150\nrequest_rate = 150\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n",
        backend.address
    );
    let mut node = Raftlb::spawn_in(&lb_ns, &config);
    node.ready(&[]).await;
    let ns = user_ns.clone();
    wait::until(
        "the node answers the user's host",
        Duration::from_secs(10),
        move || {
            let ns = ns.clone();
            netns::on_host(&ns, move || get_from(user, to).0 == Some(200))
        },
    )
    .await;

    let on_user = |length: Duration| {
        let ns = user_ns.clone();
        tokio::task::spawn_blocking(move || netns::on_host(&ns, move || user_load(user, to, length)))
    };
    // As long as the loaded phase, so both p99s rest on as many samples.
    let quiet = on_user(Duration::from_secs(6)).await.expect("user");
    let flood = Arc::new(Flood::default());
    let stop = Arc::new(AtomicBool::new(false));
    // 20 × the connection limit held, 10 × the request rate sent.
    let floods: Vec<_> = [0, 1]
        .map(|kind| {
            let (flood, stop, ns) = (Arc::clone(&flood), Arc::clone(&stop), attacker_ns.clone());
            std::thread::spawn(move || {
                netns::enter(&ns);
                match kind {
                    0 => connection_flood(attacker, to, 400, 500, &flood, &stop),
                    _ => request_flood(attacker, to, 1500, &flood, &stop),
                }
            })
        })
        .into();
    let loaded = on_user(Duration::from_secs(6)).await.expect("user");
    stop.store(true, Relaxed);
    for flood in floods {
        flood.join().expect("flood");
    }

    let ok = |results: &[(Option<u16>, Duration)]| results.iter().filter(|(s, _)| *s == Some(200)).count();
    let latencies = |results: &[(Option<u16>, Duration)]| results.iter().map(|(_, d)| *d).collect::<Vec<_>>();
    let (quiet_p99, loaded_p99) = (
        percentile(latencies(&quiet), 0.99),
        percentile(latencies(&loaded), 0.99),
    );
    let success = ok(&loaded) as f64 / loaded.len() as f64;
    let metrics = metrics_from(&user_ns, metrics);
    eprintln!(
        "user: {} requests unloaded (p99 {quiet_p99:?}), {} under the floods: {:.2} % ok, p99 {loaded_p99:?}",
        quiet.len(),
        loaded.len(),
        success * 100.0
    );
    eprintln!(
        "attacker: {} connections reset, {} held at the end; {} requests answered 200, {} answered 429 ({} with Retry-After); \
         node counted {} connection, {} connection-rate and {} request-rate refusals",
        flood.connections_reset.load(Relaxed),
        flood.connections_served.load(Relaxed),
        flood.ok.load(Relaxed),
        flood.too_many.load(Relaxed),
        flood.retry_after.load(Relaxed),
        refusals(&metrics, "connections"),
        refusals(&metrics, "connection_rate"),
        refusals(&metrics, "request_rate"),
    );
    assert_eq!(ok(&quiet), quiet.len(), "unloaded, every request succeeds");
    assert!(
        success >= 0.999,
        "{:.3} % of the user's requests succeeded",
        success * 100.0
    );
    assert!(
        loaded_p99 <= 2 * quiet_p99.max(Duration::from_millis(2)),
        "p99 {loaded_p99:?} under the floods, {quiet_p99:?} without"
    );
    assert!(flood.connections_reset.load(Relaxed) > 0);
    assert!(flood.connections_served.load(Relaxed) <= 20);
    assert!(flood.too_many.load(Relaxed) > 0);
    assert_eq!(flood.retry_after.load(Relaxed), flood.too_many.load(Relaxed));
    // 150/s for the 6 s of the flood plus a burst of 300: never more.
    assert!(flood.ok.load(Relaxed) <= 150 * 7 + 300, "{flood:?}");
    assert!(refusals(&metrics, "connections") > 0, "{metrics}");
    assert!(
        refusals(&metrics, "request_rate") >= flood.too_many.load(Relaxed),
        "{metrics}"
    );
}

/// Whether `python3` can import the `h2` library (`pip install h2`).
fn python_h2() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import h2"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_gets_goaway_and_other_clients_are_served() {
    if !python_h2() {
        eprintln!("SKIPPED: the HTTP/2 rapid-reset client needs python3 with h2 (pip install h2)");
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
