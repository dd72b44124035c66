//! TLS through real `raftlb` processes, checked with curl: certificates
//! added with `ctl cert add` on one node are served by another within a
//! second; two SNI names get two different certificates (each verified
//! against its own, self-signed, certificate); HTTP/2 is negotiated by
//! ALPN; bad PEM, a key of another certificate and an expired certificate
//! are refused with their reason; an http listener can redirect to https.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::Cluster;
use raftlb_tests::free_port;
use raftlb_tests::process::TempDir;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A self-signed certificate for `names`, written as NAME.pem and NAME.key.
fn certificate(dir: &TempDir, file: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (
        dir.write(&format!("{file}.pem"), &cert.pem()),
        dir.write(&format!("{file}.key"), &key.serialize_pem()),
    )
}

/// curl ARGS…; (exit success, stdout, stderr).
fn curl(args: &[&str]) -> (bool, String, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("run curl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_sni_from_the_cluster_http2_and_redirects() {
    let backend = HttpBackend::start("tls-backend").await;
    let plain = free_port();
    let seed = format!(
        "[[listener]]\nname = \"secure\"\nprotocol = \"https\"\nbind = \"0.0.0.0:{{HTTP}}\"\npool = \"app\"\n\n\
         [[listener]]\nname = \"plain\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{plain}\"\npool = \"app\"\nredirect_https = true\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n",
        backend.address
    );
    let cluster = Cluster::start(3, &seed).await;
    let port = cluster.members[0]
        .http
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let dir = TempDir::new("certs");
    let (a_pem, a_key) = certificate(&dir, "a", &["a.example.test"], false);
    let (b_pem, b_key) = certificate(&dir, "b", &["*.b.example.test"], false);
    let (old_pem, old_key) = certificate(&dir, "old", &["old.example.test"], true);
    let path = |p: &PathBuf| p.display().to_string();

    // Refused, each with its reason, and nothing stored.
    let garbage = dir.write("garbage.pem", "not a certificate\n");
    for (cert, key, reason) in [
        (&garbage, &a_key, "holds no PEM certificate"),
        (&a_pem, &b_key, "does not belong to the certificate"),
        (&old_pem, &old_key, "has expired"),
    ] {
        let (status, _, err) = cluster.ctl(
            0,
            &[
                "cert",
                "add",
                "x",
                "--cert-file",
                &path(cert),
                "--key-file",
                &path(key),
            ],
        );
        assert!(
            !status.success() && err.contains(reason),
            "expected {reason:?}, got {err}"
        );
    }

    // Stored through node 1 ...
    for (name, pem, key) in [("a", &a_pem, &a_key), ("b", &b_pem, &b_key)] {
        let (status, out, err) = cluster.ctl(
            0,
            &[
                "cert",
                "add",
                name,
                "--cert-file",
                &path(pem),
                "--key-file",
                &path(key),
            ],
        );
        assert!(status.success(), "cert add {name}: {err}");
        assert!(out.contains("valid for"), "{out}");
    }
    let (_, listed, _) = cluster.ctl(2, &["cert", "list"]);
    assert!(
        listed.contains("a: valid for a.example.test") && listed.contains("b: valid for *.b.example.test"),
        "{listed}"
    );

    // ... served by node 2, each name with its own certificate.
    let node2 = "127.0.0.2";
    let resolve = |host: &str| format!("{host}:{port}:{node2}");
    let url = |host: &str| format!("https://{host}:{port}/");
    let added = Instant::now();
    loop {
        let (ok, body, _) = curl(&[
            "--resolve",
            &resolve("a.example.test"),
            "--cacert",
            &path(&a_pem),
            &url("a.example.test"),
        ]);
        if ok && body == "tls-backend" {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(5),
            "node 2 never served certificate a"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "certificate a served by node 2 {:?} after it was committed",
        added.elapsed()
    );
    let (ok, body, err) = curl(&[
        "--resolve",
        &resolve("x.b.example.test"),
        "--cacert",
        &path(&b_pem),
        &url("x.b.example.test"),
    ]);
    assert!(ok && body == "tls-backend", "wildcard name: {err}");
    let (ok, _, err) = curl(&[
        "--resolve",
        &resolve("a.example.test"),
        "--cacert",
        &path(&b_pem),
        &url("a.example.test"),
    ]);
    assert!(
        !ok && err.contains("certificate"),
        "a.example.test must not get b's certificate: {err}"
    );

    // No SNI at all (an IP address): the first certificate, not a refusal.
    let (ok, body, err) = curl(&["-k", &format!("https://{node2}:{port}/")]);
    assert!(ok && body == "tls-backend", "without SNI: {err}");

    // TLS 1.2 as well as 1.3.
    let (ok, body, err) = curl(&[
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "--resolve",
        &resolve("a.example.test"),
        "--cacert",
        &path(&a_pem),
        &url("a.example.test"),
    ]);
    assert!(ok && body == "tls-backend", "TLS 1.2: {err}");

    // Session resumption: a second connection resumes the first's session.
    let session = dir.path().join("session.pem").display().to_string();
    let s_client = |extra: &[&str]| {
        let mut command = Command::new("openssl");
        command
            .args([
                "s_client",
                "-ign_eof",
                "-connect",
                &format!("{node2}:{port}"),
                "-servername",
                "a.example.test",
            ])
            .args(extra)
            .stdin(std::process::Stdio::piped());
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl");
        // A request, so the server's session ticket arrives before the close.
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n");
        }
        let output = child.wait_with_output().expect("openssl output");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = s_client(&["-sess_out", &session]);
    assert!(first.contains("tls-backend"), "{first}");
    let second = s_client(&["-sess_in", &session]);
    assert!(
        second.contains("Reused, TLSv1.3"),
        "the session was not resumed:\n{second}"
    );

    // ALPN: h2 when the client offers it, HTTP/1.1 when it does not.
    let version = |extra: &str| {
        let (ok, out, err) = curl(&[
            extra,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--resolve",
            &resolve("a.example.test"),
            "--cacert",
            &path(&a_pem),
            &url("a.example.test"),
        ]);
        assert!(ok, "{err}");
        out
    };
    assert_eq!(version("--http2"), "2");
    assert_eq!(version("--http1.1"), "1.1");

    // The plain listener sends everyone to https.
    let (ok, out, err) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: a.example.test:8080",
        &format!("http://{node2}:{plain}/x?y=1"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "301 https://a.example.test/x?y=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_over_tls_verified_against_the_pools_ca_or_not_at_all() {
    let dir = TempDir::new("backend-tls");
    let (pem, key) = certificate(&dir, "backend", &["backend.internal"], false);
    let (other_pem, _) = certificate(&dir, "other", &["other.internal"], false);
    let read = |p: &PathBuf| std::fs::read_to_string(p).expect("read");
    let backend = HttpBackend::start_tls("secure-backend", &read(&pem), &read(&key)).await;
    let config = |tls: &str| {
        let bind = format!("127.0.0.1:{}", free_port());
        let text = format!(
            "[node]\nid = 1\ndrain_timeout = \"1s\"\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\n\n\
             [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n\n[pool.tls]\n{tls}\n",
            backend.address
        );
        (bind, text)
    };
    let cases = [
        (
            format!(
                "server_name = \"backend.internal\"\nca_file = \"{}\"",
                pem.display()
            ),
            "200",
        ),
        ("insecure = true".to_string(), "200"),
        // The backend's certificate is not signed by this CA: 502.
        (
            format!(
                "server_name = \"backend.internal\"\nca_file = \"{}\"",
                other_pem.display()
            ),
            "502",
        ),
        // Nor is it valid for this name.
        (
            format!(
                "server_name = \"wrong.internal\"\nca_file = \"{}\"",
                pem.display()
            ),
            "502",
        ),
    ];
    for (tls, expected) in cases {
        let (bind, text) = config(&tls);
        let _node = raftlb_tests::process::Raftlb::start(&text, &[&bind]).await;
        let (ok, out, err) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{bind}/"),
        ]);
        assert!(ok, "{err}");
        assert_eq!(out, expected, "with [pool.tls] {tls}");
    }
    assert!(
        backend.served() >= 2,
        "the TLS backend served the verified requests"
    );

    // HTTP/2 to the backend over TLS (ALPN h2), per pool.
    let (bind, text) = config("insecure = true");
    let text = text.replace("[pool.tls]", "backend_protocol = \"h2\"\n\n[pool.tls]");
    let _node = raftlb_tests::process::Raftlb::start(&text, &[&bind]).await;
    let (ok, out, err) = curl(&[&format!("http://{bind}/version")]);
    assert!(ok, "{err}");
    assert_eq!(out, "HTTP/2.0", "the backend is spoken to in HTTP/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_serves_certificates_from_its_config_file() {
    let backend = HttpBackend::start("file-backend").await;
    let dir = TempDir::new("file-certs");
    let (pem, key) = certificate(&dir, "site", &["site.example.test"], false);
    let bind = format!("127.0.0.1:{}", free_port());
    let config = |cert: &PathBuf| {
        format!(
            "[node]\nid = 1\ndata_dir = \"{}\"\ndrain_timeout = \"1s\"\n\n[[certificate]]\nname = \"site\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [[listener]]\nname = \"secure\"\nprotocol = \"https\"\nbind = \"{bind}\"\npool = \"app\"\n\n\
             [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n",
            dir.path().join("data").display(),
            cert.display(),
            key.display(),
            backend.address
        )
    };

    // A file that is not a certificate stops the node, naming it.
    let bad = dir.write("bad.pem", "nope\n");
    let bad_config = dir.write("bad.toml", &config(&bad));
    let (status, _, err) =
        raftlb_tests::process::run_to_end(&["run", "--config", &bad_config.display().to_string()]);
    assert!(!status.success(), "a bad certificate file must stop the node");
    assert!(
        err.contains("certificate \"site\"") && err.contains("bad.pem"),
        "{err}"
    );

    let _node = raftlb_tests::process::Raftlb::start(&config(&pem), &[&bind]).await;
    let port = bind.rsplit(':').next().expect("port");
    let resolve = format!("site.example.test:{port}:127.0.0.1");
    let url = format!("https://site.example.test:{port}/");
    let started = Instant::now();
    loop {
        let (ok, body, err) = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            &pem.display().to_string(),
            &url,
        ]);
        if ok && body == "file-backend" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the file's certificate was never served: {err}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
