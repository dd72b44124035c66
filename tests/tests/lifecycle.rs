//! The `raftlb` command itself: `check` and its exit codes, graceful stop, `demo`.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::process::{self, Raftlb, TempDir};
use raftlb_tests::{client, free_port, wait};
use std::path::Path;
use std::time::Duration;

fn example_config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/examples/raftlb.toml")
}

#[test]
fn check_accepts_the_example_config_with_certificates_from_certs_init() {
    let dir = TempDir::new("example");
    let pki = dir.path().join("pki");
    let (status, stdout, stderr) = process::run_to_end(&[
        "certs",
        "init",
        "--cluster",
        "prod-lb",
        "--out",
        pki.to_str().expect("utf8"),
        "--nodes",
        "1,2",
    ]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("[cluster.tls]"), "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |file: &str| {
        std::fs::metadata(pki.join(file))
            .expect("written")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(mode("node-1.key"), 0o600);
    assert_eq!(mode("node-1.pem"), 0o644);
    let example = std::fs::read_to_string(example_config()).expect("example config");
    assert!(
        example.contains("/etc/raftlb/pki"),
        "the example names its certificate files"
    );
    let config = dir.write(
        "raftlb.toml",
        &example.replace("/etc/raftlb/pki", pki.to_str().expect("utf8")),
    );
    let (status, stdout, stderr) =
        process::run_to_end(&["check", "--config", config.to_str().expect("utf8")]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "config ok: 3 listeners, 2 pools, 4 backends");
    // As written (no such files here), it names the file and the reason.
    let (status, _, stderr) =
        process::run_to_end(&["check", "--config", example_config().to_str().expect("utf8")]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("[cluster.tls] /etc/raftlb/pki/ca.pem: cannot read it"),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_error_and_exits_1() {
    let dir = TempDir::new("check");
    let path = dir.write(
        "bad.toml",
        "[node]\nid = 1\n\n[[listener]]\nname = \"web\"\nprotocol = \"htp\"\nbind = \"127.0.0.1:8080\"\npool = \"nope\"\n\n[[pool]]\nname = \"app\"\nbackends = [{ address = \"127.0.0.1:99999\" }]\n",
    );
    let file = path.to_str().expect("utf8");
    let (status, stdout, stderr) = process::run_to_end(&["check", "--config", file]);
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with(&format!(
        "{file}:6: listener[0].protocol: unknown protocol \"htp\""
    )));
    assert!(lines[1].starts_with(&format!("{file}:8: listener[0].pool: no pool named \"nope\"")));
    assert!(lines[2].starts_with(&format!(
        "{file}:12: pool[0].backends[0].address: invalid socket address"
    )));
}

#[test]
fn missing_file_and_usage_errors_have_their_own_exit_codes() {
    let (status, _, stderr) = process::run_to_end(&["check", "--config", "/nonexistent/raftlb.toml"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("cannot read config file /nonexistent/raftlb.toml"),
        "{stderr}"
    );
    let (status, _, _) = process::run_to_end(&["check"]);
    assert_eq!(status.code(), Some(2));
    let (status, _, _) = process::run_to_end(&["frobnicate"]);
    assert_eq!(status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let backend = HttpBackend::start_slow("slow").await;
    let bind = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"10s\"\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"p\"\n[[pool]]\nname = \"p\"\nbackends = [{{ address = \"{}\" }}]\n",
        backend.address
    );
    let mut node = Raftlb::start(&config, &[&bind]).await;
    let url = format!("http://{bind}/slow?ms=1500");
    let slow = tokio::spawn(async move { client::get(&client::http1(), &url).await });
    wait::until(
        "the slow request to reach the backend",
        Duration::from_secs(5),
        || backend.in_flight() == 1,
    )
    .await;

    node.terminate();
    // The listener closes at once; the request in flight still completes.
    wait::port_closed(&bind, Duration::from_secs(5)).await;
    let (status, body) = slow.await.expect("join");
    assert_eq!((status, body.as_str()), (200, "slow"));
    let exit = node.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{}", node.log());
    assert!(node.log().contains("drained"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_forms_a_cluster_that_balances_on_every_node_and_stops_cleanly() {
    let (http, raft, backend) = (free_port(), free_port(), free_port());
    // The demo's backends take `backend`, +1 and +2: keep the next two ports
    // from being handed to a test running alongside (ports come in sequence).
    for expected in [backend + 1, backend + 2] {
        assert_eq!(free_port(), expected, "the demo's backend ports are not free");
    }
    let mut demo = std::process::Command::new(process::binary())
        .args([
            "demo",
            "--http-port",
            &http.to_string(),
            "--raft-port",
            &raft.to_string(),
        ])
        .args(["--backend-port", &backend.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn demo");
    for n in 1..=3 {
        wait::port_open(&format!("127.0.0.{n}:{http}"), Duration::from_secs(20)).await;
    }
    // The guide's ctl lines work as printed (mutual TLS, the demo's own CA).
    let stdout = demo.stdout.take().expect("piped stdout");
    let guide = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("a line");
            let done = line.contains("Ctrl-C stops the demo");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let guide = tokio::time::timeout(Duration::from_secs(20), guide)
        .await
        .expect("the guide is printed")
        .expect("join");
    let status_line = guide
        .iter()
        .map(|l| l.trim())
        .find(|l| l.contains(" ctl --ctl-config ") && l.ends_with(" status"))
        .unwrap_or_else(|| panic!("no ctl status line in {guide:#?}"))
        .to_string();
    let words: Vec<&str> = status_line.split_whitespace().collect();
    let output = std::process::Command::new(words[0])
        .args(&words[1..])
        .output()
        .expect("run the printed ctl line");
    assert!(
        output.status.success(),
        "{status_line}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("leader"),
        "{status_line}"
    );
    let client = client::http1();
    let mut answers = Vec::new();
    for n in [1, 2, 3] {
        for _ in 0..3 {
            answers.push(
                client::get(&client, &format!("http://127.0.0.{n}:{http}/"))
                    .await
                    .1,
            );
        }
    }
    for name in ["backend-1", "backend-2", "backend-3"] {
        assert_eq!(
            answers.iter().filter(|a| a.trim() == name).count(),
            3,
            "round robin on each node: {answers:?}"
        );
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || demo.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert!(exit.status.success(), "demo exited with {}", exit.status);
    for n in 1..=3 {
        wait::port_closed(&format!("127.0.0.{n}:{http}"), Duration::from_secs(10)).await;
    }
}
