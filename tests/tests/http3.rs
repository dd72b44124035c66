//! HTTP/3 through real `raftlb` processes, with a third-party client
//! (aioquic, `tests/scripts/h3_client.py`): routing by host and path,
//! certificates chosen by SNI and added with `ctl cert add` on another
//! node, a 10 MB upload, `Alt-Svc` on the TCP side, 0-RTT that serves
//! only safe methods from early data, a drain that lets a request in
//! flight finish, clients whose address changes mid-connection kept on
//! the worker that owns their connection, and garbage datagrams and a flood of Initials from many
//! sources (answered with Retries past the threshold) that harm no one.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::Cluster;
use raftlb_tests::h3::H3Conn;
use raftlb_tests::nat::Nat;
use raftlb_tests::process::TempDir;
use raftlb_tests::python_module_or_skip;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/h3_client.py");

/// A self-signed certificate for `name`, written as FILE.pem and FILE.key.
fn certificate(dir: &TempDir, file: &str, name: &str) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (
        dir.write(&format!("{file}.pem"), &cert.pem()),
        dir.write(&format!("{file}.key"), &key.serialize_pem()),
    )
}

/// A one-node cluster's seed: certificate `a` (for a.example.test, from
/// files in `dir`), an https listener on the test port with
/// `listener_lines`, and pool `a` of `backend`. Returns the certificate's
/// PEM file and the seed.
fn one_node_seed(dir: &TempDir, listener_lines: &str, backend: &HttpBackend) -> (PathBuf, String) {
    let (pem, key) = certificate(dir, "a", "a.example.test");
    let seed = format!(
        "[[certificate]]\nname = \"a\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[listener]]\nname = \"secure\"\nprotocol = \"https\"\nbind = \"0.0.0.0:{{HTTP}}\"\npool = \"a\"\n\
         {listener_lines}\n\n[[pool]]\nname = \"a\"\nbackends = [{{ address = \"{}\" }}]\n",
        pem.display(),
        key.display(),
        backend.address
    );
    (pem, seed)
}

/// One run of the client against `ip:port`: the requests (JSON), then
/// extra flags. `Ok(report)` or `Err(stderr)`.
fn h3(ip: &str, port: u16, requests: &str, flags: &[&str]) -> Result<Value, String> {
    let out = Command::new("python3")
        .args([CLIENT, ip, &port.to_string(), requests])
        .args(flags)
        .output()
        .expect("run the HTTP/3 client");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A GET of `path` at `host`, with SNI `host`, trusting `ca`.
fn get(ip: &str, port: u16, host: &str, path: &str, ca: &std::path::Path) -> Result<Value, String> {
    let requests = format!(r#"[{{"authority": "{host}", "path": "{path}"}}]"#);
    h3(
        ip,
        port,
        &requests,
        &["--sni", host, "--cacert", &ca.display().to_string()],
    )
}

fn status_and_body(report: &Value, i: usize) -> (u64, String) {
    let result = &report["results"][i];
    (
        result["status"].as_u64().unwrap_or(0),
        result["body"].as_str().unwrap_or("").to_string(),
    )
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_routes_by_host_and_path_with_certificates_from_the_cluster() {
    if !python_module_or_skip(
        "http3_routes_by_host_and_path_with_certificates_from_the_cluster",
        "aioquic",
    ) {
        return;
    }
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let seed = format!(
        "[[listener]]\nname = \"secure\"\nprotocol = \"https\"\nbind = \"0.0.0.0:{{HTTP}}\"\npool = \"a\"\nhttp3 = true\n\n\
         [[listener.route]]\nmatch = {{ host = \"b.example.test\" }}\npool = \"b\"\n\n\
         [[listener.route]]\nmatch = {{ path_prefix = \"/to-b\" }}\npool = \"b\"\n\n\
         [[pool]]\nname = \"a\"\nbackends = [{{ address = \"{}\" }}]\n\n\
         [[pool]]\nname = \"b\"\nbackends = [{{ address = \"{}\" }}]\n",
        a.address, b.address
    );
    let cluster = Cluster::start(3, &seed).await;
    let port = port_of(&cluster.members[0].http);
    let dir = TempDir::new("h3-certs");
    let (a_pem, a_key) = certificate(&dir, "a", "a.example.test");
    let (b_pem, b_key) = certificate(&dir, "b", "b.example.test");

    // Added through node 1, served over HTTP/3 by node 3 within a second.
    for (name, pem, key) in [("a", &a_pem, &a_key), ("b", &b_pem, &b_key)] {
        let (pem, key) = (pem.display().to_string(), key.display().to_string());
        let (status, _, err) =
            cluster.ctl(0, &["cert", "add", name, "--cert-file", &pem, "--key-file", &key]);
        assert!(status.success(), "cert add {name}: {err}");
    }
    let node3 = "127.0.0.3";
    let requests = r#"[{"authority": "b.example.test", "path": "/"}]"#;
    let ca = b_pem.display().to_string();
    let served = h3(
        node3,
        port,
        requests,
        &["--sni", "b.example.test", "--cacert", &ca, "--retry-for", "5"],
    )
    .unwrap_or_else(|e| panic!("node 3 never served certificate b over HTTP/3: {e}"));
    let elapsed = served["elapsed_ms"].as_u64().expect("elapsed_ms");
    println!("certificate b served over HTTP/3 by node 3 {elapsed} ms after it was committed");
    assert!(
        elapsed <= 1000,
        "certificate b took {elapsed} ms to reach node 3's HTTP/3"
    );

    // Routing: by host, by path, and the listener's pool otherwise; each
    // name with its own certificate, chosen by SNI.
    for (host, path, ca, expected) in [
        ("a.example.test", "/", &a_pem, "a"),
        ("b.example.test", "/", &b_pem, "b"),
        ("a.example.test", "/to-b/x", &a_pem, "b"),
    ] {
        let report = get(node3, port, host, path, ca).unwrap_or_else(|e| panic!("{host}{path}: {e}"));
        assert_eq!(
            status_and_body(&report, 0),
            (200, expected.to_string()),
            "{host}{path}: {report}"
        );
    }
    let wrong = get(node3, port, "a.example.test", "/", &b_pem);
    assert!(
        wrong.is_err(),
        "a.example.test must not be served b's certificate: {wrong:?}"
    );

    // The backend gets HTTP/1.1 with the client's address forwarded; a
    // 10 MB upload arrives whole, on the same connection as a GET.
    let requests = r#"[{"authority": "a.example.test", "path": "/headers"},
        {"authority": "a.example.test", "path": "/upload", "method": "POST", "body_bytes": 10485760}]"#;
    let ca = a_pem.display().to_string();
    let report = h3(
        node3,
        port,
        requests,
        &["--sni", "a.example.test", "--cacert", &ca],
    )
    .expect("upload");
    let (status, headers) = status_and_body(&report, 0);
    assert_eq!(status, 200, "{report}");
    assert!(headers.contains("x-forwarded-for: 127.0.0.1"), "{headers}");
    assert!(headers.contains("x-forwarded-proto: https"), "{headers}");
    assert_eq!(
        status_and_body(&report, 1),
        (200, "10485760".to_string()),
        "{report}"
    );

    // The TCP side says where HTTP/3 is; HTTP/3's answers do not.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--cacert",
            &ca,
        ])
        .args(["--resolve", &format!("a.example.test:{port}:{node3}")])
        .arg(format!("https://a.example.test:{port}/"))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        head.contains(&format!("alt-svc: h3=\":{port}\"; ma=86400")),
        "{head}"
    );
    assert!(
        !report["results"][0]["headers"]
            .as_object()
            .expect("headers")
            .contains_key("alt-svc")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_serves_safe_methods_and_answers_others_too_early() {
    if !python_module_or_skip(
        "zero_rtt_serves_safe_methods_and_answers_others_too_early",
        "aioquic",
    ) {
        return;
    }
    let backend = HttpBackend::start("a").await;
    let dir = TempDir::new("h3-0rtt");
    let (pem, seed) = one_node_seed(&dir, "http3 = true\nhttp3_early_data = true", &backend);
    let cluster = Cluster::start(1, &seed).await;
    let port = port_of(&cluster.members[0].http);
    let ca = pem.display().to_string();
    // GETs and POSTs sent in 0-RTT, before the handshake is done. A POST
    // the server reads before the handshake is done gets 425 and never
    // reaches the backend; one it reads after may be served (the handshake
    // proves it is no replay). Tries until some POST was early enough.
    let mut too_early = 0;
    for attempt in 0..20 {
        let id = |i: u64| attempt * 100 + i;
        let requests: Vec<String> = (0..10)
            .map(|i| {
                let method = if i % 2 == 0 { "GET" } else { "POST" };
                format!(
                    r#"{{"authority": "a.example.test", "method": "{method}", "path": "/", "headers": {{"x-request-id": "{}"}}}}"#,
                    id(i)
                )
            })
            .collect();
        let requests = format!("[{}]", requests.join(","));
        let report = h3(
            "127.0.0.1",
            port,
            &requests,
            &["--sni", "a.example.test", "--cacert", &ca, "--zero-rtt"],
        )
        .expect("0-RTT client");
        assert_eq!(
            report["early_data"],
            Value::Bool(true),
            "0-RTT not accepted: {report}"
        );
        let seen: Vec<u64> = backend
            .counters
            .ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.id)
            .collect();
        for i in 0..10 {
            let (status, body) = status_and_body(&report, i as usize);
            if i % 2 == 0 {
                assert_eq!((status, body.as_str()), (200, "a"), "GET in early data: {report}");
                continue;
            }
            match status {
                425 => {
                    too_early += 1;
                    assert!(!seen.contains(&id(i)), "a POST answered 425 reached the backend");
                }
                200 => assert!(seen.contains(&id(i))),
                other => panic!("POST in early data answered {other}: {report}"),
            }
        }
        if too_early > 0 {
            println!("{too_early} POSTs answered 425 in {} attempts", attempt + 1);
            return;
        }
    }
    panic!("no POST in 0-RTT was read before its handshake finished in 20 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_an_http3_request_in_flight_finish() {
    if !python_module_or_skip("a_stop_lets_an_http3_request_in_flight_finish", "aioquic") {
        return;
    }
    let backend = HttpBackend::start_slow("slow").await;
    let dir = TempDir::new("h3-drain");
    let (pem, seed) = one_node_seed(&dir, "http3 = true", &backend);
    let mut cluster = Cluster::start(1, &seed).await;
    let port = port_of(&cluster.members[0].http);
    let ca = pem.display().to_string();
    let slow = tokio::task::spawn_blocking(move || {
        let requests = r#"[{"authority": "a.example.test", "path": "/slow?ms=1500"}]"#;
        h3(
            "127.0.0.1",
            port,
            requests,
            &["--sni", "a.example.test", "--cacert", &ca],
        )
    });
    raftlb_tests::wait::until("the slow request at the backend", Duration::from_secs(5), || {
        backend.in_flight() == 1
    })
    .await;
    let node = cluster.members[0].process.as_mut().expect("node");
    node.terminate();
    let report = slow.await.expect("client").expect("the request in flight");
    assert_eq!(status_and_body(&report, 0), (200, "slow".to_string()), "{report}");
    let status = node.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "node exit: {status:?}");
}

/// Real QUIC Initials, each from a new connection of a quinn client to a
/// socket of the test's that only records them (no handshake follows).
async fn captured_initials(count: usize) -> Vec<Vec<u8>> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("sink");
    let to = sink.local_addr().expect("sink");
    let dir = TempDir::new("h3-initials");
    let (pem, _) = certificate(&dir, "x", "a.example.test");
    let roots = raftlb_tests::h3::roots_of(&std::fs::read_to_string(pem).expect("pem"));
    let config = raftlb_tests::h3::client_config(Some(roots));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(config);
    let mut initials: Vec<Vec<u8>> = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::new();
    // Kept until the end: a dropped connection would send a close, which
    // is an Initial too.
    let mut open = Vec::with_capacity(count);
    let mut buf = vec![0u8; 2048];
    while initials.len() < count {
        open.push(endpoint.connect(to, "a.example.test").expect("connect"));
        let (len, _) = sink.recv_from(&mut buf).await.expect("an Initial");
        let dcid = buf[6..6 + usize::from(buf[5])].to_vec();
        // An Initial (a retransmission's ID is seen already).
        if buf[0] & 0xb0 == 0x80 && seen.insert(dcid) {
            initials.push(buf[..len].to_vec());
        }
    }
    initials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bogus_versions_and_an_initial_flood_harm_no_one() {
    if !python_module_or_skip(
        "garbage_bogus_versions_and_an_initial_flood_harm_no_one",
        "aioquic",
    ) {
        return;
    }
    let backend = HttpBackend::start("a").await;
    let dir = TempDir::new("h3-flood");
    let (pem, seed) = one_node_seed(&dir, "http3 = true\nhttp3_retry_threshold = 16", &backend);
    let cluster = Cluster::start(1, &seed).await;
    let port = port_of(&cluster.members[0].http);
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let ca = pem.display().to_string();
    let node = cluster.members[0].process.as_ref().expect("node");
    let rss_before = node.rss_kib();

    // Garbage: random datagrams of every size, truncated and bogus-version
    // long headers. Nothing answers them but a version negotiation.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("socket");
    let mut seed_byte = 0x9e37_79b9_u32;
    let mut random = move || {
        seed_byte ^= seed_byte << 13;
        seed_byte ^= seed_byte >> 17;
        seed_byte ^= seed_byte << 5;
        seed_byte
    };
    for i in 0..20_000u32 {
        let len = (random() % 1400) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| random() as u8).collect();
        match i % 4 {
            // A long header of an unknown version, padded as an Initial.
            0 if len > 40 => datagram[1..5].copy_from_slice(&0x1a2a_3a4a_u32.to_be_bytes()),
            // A long header cut short.
            1 => datagram.truncate(7),
            _ => {}
        }
        if let Some(first) = datagram.first_mut() {
            *first |= if i % 2 == 0 { 0xc0 } else { 0 };
        }
        let _ = socket.send_to(&datagram, target).await;
    }

    // A flood of real Initials, each from its own source: past 16
    // handshakes under way, each gets a Retry (stateless) instead of a
    // connection.
    let initials = captured_initials(2_000).await;
    let mut sources = Vec::with_capacity(initials.len());
    for (i, initial) in initials.iter().enumerate() {
        let ip = [127, 0, 3 + (i / 250) as u8, 1 + (i % 250) as u8];
        let source = std::net::UdpSocket::bind(std::net::SocketAddr::from((ip, 0))).expect("source");
        source.send_to(initial, target).expect("send");
        sources.push(source);
        if i % 50 == 49 {
            // Paced so the kernel's socket buffers, not raftlb, decide little.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Every answer (a Retry, or the server's first flight) has come by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut retries, mut handshakes) = (0, 0);
    for source in &sources {
        source.set_nonblocking(true).expect("nonblocking");
        let mut answer = [0u8; 2048];
        if let Ok((len, _)) = source.recv_from(&mut answer)
            && len > 0
        {
            match (answer[0] & 0x30) >> 4 {
                3 => retries += 1,
                _ => handshakes += 1,
            }
        }
    }
    let rss_after = node.rss_kib();
    println!(
        "20 000 garbage datagrams, then {} Initials from as many sources: {handshakes} handshakes begun, \
         {retries} Retries; RSS {rss_before} KiB → {rss_after} KiB",
        initials.len()
    );
    assert!(
        handshakes <= 64,
        "{handshakes} handshakes begun past the threshold of 16"
    );
    let answered = retries + handshakes;
    assert!(
        answered >= initials.len() / 2,
        "only {answered} Initials answered"
    );
    assert!(
        retries >= answered * 9 / 10,
        "only {retries} Retries of {answered} answers"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );

    // And a real client is served: it proves its address with the Retry's token.
    let report = get(
        "127.0.0.1",
        port,
        "a.example.test",
        "/",
        std::path::Path::new(&ca),
    )
    .expect("a client after the flood");
    assert_eq!(status_and_body(&report, 0), (200, "a".to_string()), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_http3_client_keeps_its_connection() {
    // Each worker has its own endpoint; the kernel would hash a client's
    // new address to any of them. The connection ID steers it back.
    let backend = HttpBackend::start("a").await;
    let dir = TempDir::new("h3-rebind");
    let (pem, seed) = one_node_seed(&dir, "http3 = true", &backend);
    let cluster = Cluster::start(1, &seed).await;
    let port = port_of(&cluster.members[0].http);
    let roots = raftlb_tests::h3::roots_of(&std::fs::read_to_string(&pem).expect("pem"));
    let config = raftlb_tests::h3::client_config(Some(roots));
    for i in 0..8u8 {
        let mut nat = Nat::start(
            ([127, 0, 0, 1], port).into(),
            [127, 0, 4, i + 1],
            [127, 0, 5, i + 1],
        )
        .await;
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
        endpoint.set_default_client_config(config.clone());
        let mut conn = H3Conn::connect(&endpoint, nat.address(), "a.example.test")
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        let first = conn.get("/").await.unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(first, (200, bytes::Bytes::from_static(b"a")));
        let from = nat.rebind().await;
        let again = tokio::time::timeout(Duration::from_secs(5), conn.get("/")).await;
        assert!(
            matches!(&again, Ok(Ok((200, body))) if body == "a"),
            "client {i} from {from}: {again:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listeners_per_source_limits_count_quic_connections() {
    let backend = HttpBackend::start("a").await;
    let dir = TempDir::new("h3-limits");
    let (pem, seed) = one_node_seed(
        &dir,
        "http3 = true\n\n[listener.limits]\nconnections = 2",
        &backend,
    );
    let cluster = Cluster::start(1, &seed).await;
    let to: std::net::SocketAddr = format!("127.0.0.1:{}", port_of(&cluster.members[0].http))
        .parse()
        .expect("address");
    let roots = raftlb_tests::h3::roots_of(&std::fs::read_to_string(&pem).expect("pem"));
    let mut config = raftlb_tests::h3::client_config(Some(roots));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(20).try_into().expect("idle")));
    config.transport_config(std::sync::Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(config);

    // Two connections from 127.0.0.1 are served; a third is not answered.
    let mut first = H3Conn::connect(&endpoint, to, "a.example.test")
        .await
        .expect("first");
    let mut second = H3Conn::connect(&endpoint, to, "a.example.test")
        .await
        .expect("second");
    assert_eq!(first.get("/").await.expect("first").0, 200);
    assert_eq!(second.get("/").await.expect("second").0, 200);
    // (Its Initials are dropped unanswered, however often it sends them.)
    let third = tokio::time::timeout(
        Duration::from_secs(3),
        H3Conn::connect(&endpoint, to, "a.example.test"),
    )
    .await;
    assert!(
        !matches!(third, Ok(Ok(_))),
        "a third connection from one source was served"
    );
    // One closes, and a new one is served.
    first.connection.close(0u32.into(), b"done");
    drop(first);
    let served = raftlb_tests::wait::value_of(
        "a connection once one closed",
        Duration::from_secs(10),
        || async {
            let mut conn = H3Conn::connect(&endpoint, to, "a.example.test").await.ok()?;
            conn.get("/").await.ok().map(|(status, _)| status)
        },
    )
    .await;
    assert_eq!(served, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_upgrade_hands_the_http3_sockets_over() {
    let backend = HttpBackend::start("a").await;
    let dir = TempDir::new("h3-upgrade");
    let (pem, key) = certificate(&dir, "a", "a.example.test");
    let address = format!("127.0.0.1:{}", raftlb_tests::free_port());
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"2s\"\n\n\
         [[certificate]]\nname = \"a\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[listener]]\nname = \"secure\"\nprotocol = \"https\"\nbind = \"{address}\"\npool = \"a\"\nhttp3 = true\n\n\
         [[pool]]\nname = \"a\"\nbackends = [{{ address = \"{}\" }}]\n",
        pem.display(),
        key.display(),
        backend.address
    );
    let mut node = raftlb_tests::process::Raftlb::start(&config, &[&address]).await;
    let to: std::net::SocketAddr = address.parse().expect("address");
    let roots = raftlb_tests::h3::roots_of(&std::fs::read_to_string(&pem).expect("pem"));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(raftlb_tests::h3::client_config(Some(roots)));
    for round in 0..3 {
        // Served over HTTP/3 by this process (after an upgrade: on the
        // sockets its predecessor handed it).
        let served = raftlb_tests::wait::value_of("an HTTP/3 answer", Duration::from_secs(10), || async {
            let mut conn = H3Conn::connect(&endpoint, to, "a.example.test").await.ok()?;
            conn.get("/").await.ok()
        })
        .await;
        assert_eq!(served, (200, bytes::Bytes::from_static(b"a")), "round {round}");
        if round == 2 {
            break;
        }
        let mut new = node.spawn_successor(&format!("raftlb-{round}.log"));
        let status = node.wait_exit(Duration::from_secs(30)).await;
        assert!(
            status.success(),
            "round {round}: the old process exited {status}:\n{}",
            node.log()
        );
        new.ready(&[&address]).await;
        assert!(
            !new.log().contains("cannot bind"),
            "round {round}: the new process could not bind:\n{}",
            new.log()
        );
        node = new;
    }
}
