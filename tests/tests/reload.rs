//! Configuration reload. A standalone node follows its file: restarted
//! with an edited file, or sent SIGHUP, or asked by `raftlb reload`, it
//! commits the file's differences (one entry) and serves them; a broken
//! file changes nothing and says why. A cluster node only describes the
//! difference unless `[cluster] apply_file_on_reload = true`.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::process::{Raftlb, TempDir, run_to_end};
use raftlb_tests::{client, free_port, wait};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A standalone node's file: an HTTP listener per `(name, port)`, all
/// sending to pool `app` of `(backend, weight)`, balanced by `algorithm`.
fn standalone(
    data_dir: &Path,
    listeners: &[(&str, u16)],
    algorithm: &str,
    backends: &[(SocketAddr, u32)],
) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(b, weight)| format!("{{ address = \"{b}\", weight = {weight} }}"))
        .collect();
    let mut text = format!(
        "[node]\nid = 1\ndata_dir = \"{}\"\ndrain_timeout = \"1s\"\n\n",
        data_dir.display()
    );
    for (name, port) in listeners {
        text.push_str(&format!(
            "[[listener]]\nname = \"{name}\"\nprotocol = \"http\"\nbind = \"127.0.0.1:{port}\"\npool = \"app\"\n\n"
        ));
    }
    text.push_str(&format!(
        "[[pool]]\nname = \"app\"\nalgorithm = \"{algorithm}\"\nbackends = [{}]\n",
        list.join(", ")
    ));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_restarted_with_an_edited_file_serves_it() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let data = TempDir::new("standalone-data");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let url = format!("http://{address}/");
    let http = client::http1();

    let mut node = Raftlb::start(
        &standalone(data.path(), &[("web", port)], "round_robin", &[(a.address, 1)]),
        &[&address],
    )
    .await;
    assert_eq!(client::get(&http, &url).await, (200, "a".to_string()));
    node.terminate();
    assert!(node.wait_exit(Duration::from_secs(10)).await.success());

    // The same data dir, the pool edited: another backend, another algorithm.
    let edited = standalone(
        data.path(),
        &[("web", port)],
        "least_connections",
        &[(b.address, 1)],
    );
    let node = Raftlb::start(&edited, &[&address]).await;
    wait::until("the edited file is committed", Duration::from_secs(10), || {
        node.log().contains("at start: committed the config file's")
    })
    .await;
    let log = node.log();
    assert!(!log.contains("differs from the cluster state"), "{log}");
    for _ in 0..5 {
        assert_eq!(client::get(&http, &url).await, (200, "b".to_string()));
    }
}

/// One answered (or failed) request of the load.
#[derive(Debug, Clone)]
struct Answer {
    sent: Instant,
    /// The backend's name, or what went wrong (a non-200 included).
    outcome: Result<String, String>,
}

/// Keep-alive HTTP clients in closed loops against one URL, until stopped
/// or `cap` has passed.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, clients: usize, cap: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let began = Instant::now();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, answers, url) = (Arc::clone(&stop), Arc::clone(&answers), url.to_string());
                tokio::spawn(async move {
                    let http = client::http1();
                    while !stop.load(Ordering::Relaxed) && began.elapsed() < cap {
                        let sent = Instant::now();
                        let outcome = match client::try_get(&http, &url).await {
                            Ok((200, body)) => Ok(body),
                            Ok((status, body)) => Err(format!("{status} {body}")),
                            Err(e) => Err(e),
                        };
                        answers.lock().expect("answers").push(Answer { sent, outcome });
                    }
                })
            })
            .collect();
        Load { stop, answers, tasks }
    }

    fn count(&self) -> usize {
        self.answers.lock().expect("answers").len()
    }

    /// Answers to requests sent at or after `from`.
    fn since(&self, from: Instant) -> usize {
        let answers = self.answers.lock().expect("answers");
        answers.iter().filter(|a| a.sent >= from).count()
    }

    async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        let answers = self.answers.lock().expect("answers");
        answers.clone()
    }
}

/// The share of `answers` sent within `[from, to)` that `backend` served.
fn share(answers: &[Answer], backend: &str, from: Instant, to: Instant) -> (f64, usize) {
    let window: Vec<&Answer> = answers.iter().filter(|a| a.sent >= from && a.sent < to).collect();
    let hits = window
        .iter()
        .filter(|a| a.outcome.as_deref() == Ok(backend))
        .count();
    (hits as f64 / window.len().max(1) as f64, window.len())
}

/// The 1-based line of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

/// `raftlb reload --config PATH`, off the test's runtime threads.
async fn reload_cli(path: &Path) -> (ExitStatus, String, String) {
    let path = path.display().to_string();
    tokio::task::spawn_blocking(move || run_to_end(&["reload", "--config", &path]))
        .await
        .expect("raftlb reload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_edited_file_under_load_and_a_broken_one_changes_nothing() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let data = TempDir::new("reload-data");
    let (port, new_port) = (free_port(), free_port());
    let (address, new_address) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{new_port}"));
    let (url, new_url) = (format!("http://{address}/"), format!("http://{new_address}/"));
    let before = standalone(
        data.path(),
        &[("web", port)],
        "round_robin",
        &[(a.address, 1), (b.address, 1)],
    );
    let node = Raftlb::start(&before, &[&address]).await;
    let config = node.config_path();

    let load = Load::start(&url, 4, Duration::from_secs(60));
    wait::until("300 answers before the reload", Duration::from_secs(20), || {
        load.count() >= 300
    })
    .await;

    // The edit: another algorithm, b's weight 1 → 4, a new listener.
    let edited = standalone(
        data.path(),
        &[("web", port), ("web2", new_port)],
        "weighted_round_robin",
        &[(a.address, 1), (b.address, 4)],
    );
    std::fs::write(&config, &edited).expect("write the edited file");
    let hangup = Instant::now();
    node.signal("HUP");
    let probe = client::http1();
    let new_listener = loop {
        if let Ok((200, _)) = client::try_get(&probe, &new_url).await {
            break hangup.elapsed();
        }
        assert!(
            hangup.elapsed() < Duration::from_secs(5),
            "the new listener does not answer 5 s after SIGHUP:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let effect = hangup + new_listener;
    wait::until("400 answers after the reload", Duration::from_secs(20), || {
        load.since(effect) >= 400
    })
    .await;
    let answers = load.stop().await;
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.outcome.is_err()).collect();
    let (b_before, n_before) = share(&answers, "b", answers[0].sent, hangup);
    let (b_after, n_after) = share(&answers, "b", effect, Instant::now());
    println!(
        "SIGHUP → new listener answering in {new_listener:.1?}; {} requests, {} failed; \
         b's share {:.0} % of {n_before} before (round robin, 1:1), {:.0} % of {n_after} after \
         (weighted round robin, 1:4)",
        answers.len(),
        failed.len(),
        b_before * 100.0,
        b_after * 100.0,
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(new_listener < Duration::from_secs(1), "{new_listener:?}");
    assert!((0.35..=0.65).contains(&b_before), "b's share before: {b_before}");
    assert!((0.7..=0.9).contains(&b_after), "b's share after: {b_after}");
    assert!(node.log().contains("reload (SIGHUP): "), "{}", node.log());
    assert!(
        node.log().contains("committed the config file's"),
        "{}",
        node.log()
    );

    // A broken file (a misspelt algorithm; web2 gone): nothing changes.
    let broken = standalone(
        data.path(),
        &[("web", port)],
        "round_robbin",
        &[(a.address, 1), (b.address, 4)],
    );
    std::fs::write(&config, &broken).expect("write the broken file");
    let line = line_of(&broken, "round_robbin");
    let reason = format!(
        "{}:{line}: pool[0].algorithm: unknown algorithm",
        config.display()
    );
    node.signal("HUP");
    wait::until(
        "the broken file's reasons in the log",
        Duration::from_secs(5),
        || node.log().contains(&reason),
    )
    .await;
    assert!(
        node.log().contains("fails its check; nothing changed"),
        "{}",
        node.log()
    );
    let logged = node.log();
    let logged = logged.lines().find(|l| l.contains(&reason)).unwrap_or_default();
    println!("the broken file, logged: {logged}");
    let http = client::http1();
    let mut served_b = 0;
    for _ in 0..50 {
        let (status, backend) = client::get(&http, &new_url).await;
        assert_eq!(status, 200);
        served_b += usize::from(backend == "b");
    }
    println!("after the broken file: web2 still answers, b served {served_b} of 50");
    assert!((35..=45).contains(&served_b), "{served_b}");

    // `raftlb reload`: the broken file is refused with its reasons …
    let (status, out, err) = reload_cli(&config).await;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains(&reason), "{err}");
    // … the file without web2 is committed …
    let without = standalone(
        data.path(),
        &[("web", port)],
        "weighted_round_robin",
        &[(a.address, 1), (b.address, 4)],
    );
    std::fs::write(&config, &without).expect("write the file without web2");
    let asked = Instant::now();
    let (status, out, err) = reload_cli(&config).await;
    let answered = asked.elapsed();
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("committed the config file's 1 change as one entry at log index"),
        "{out}"
    );
    wait::port_closed(&new_address, Duration::from_secs(1)).await;
    println!("raftlb reload answered in {answered:.1?}:\n{out}");
    // … the same file again changes nothing …
    let (status, out, err) = reload_cli(&config).await;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("matches the cluster state"), "{out}");
    // … another node's file is refused whole …
    std::fs::write(&config, without.replace("id = 1", "id = 2")).expect("write");
    let (status, out, err) = reload_cli(&config).await;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("[node] id is 2 in the file, but this process is node 1"),
        "{err}"
    );
    // … and where nothing runs, it says so.
    let elsewhere = TempDir::new("reload-nothing");
    let lonely = elsewhere.write(
        "lonely.toml",
        &standalone(elsewhere.path(), &[], "round_robin", &[(a.address, 1)]),
    );
    let (status, out, err) = reload_cli(&lonely).await;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("cannot reload: nothing listens on"), "{err}");
    assert_eq!(client::get(&http, &url).await.0, 200);

    // After an in-place upgrade the new process answers both, on the
    // socket it inherited.
    std::fs::write(&config, &without).expect("write");
    let mut node = node;
    let mut successor = node.spawn_successor("successor.log");
    successor.ready(&[&address]).await;
    assert!(node.wait_exit(Duration::from_secs(10)).await.success());
    let (status, out, err) = reload_cli(&config).await;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("matches the cluster state"), "{out}");
    successor.signal("HUP");
    wait::until("SIGHUP heard by the new process", Duration::from_secs(5), || {
        successor.log().contains("reload (SIGHUP): ")
    })
    .await;
    println!("after an in-place upgrade: the new process answered raftlb reload and SIGHUP");
}

/// The pool line of `ctl pools` on node `index`.
fn pool_line(cluster: &Cluster, index: usize) -> String {
    let (status, out, err) = cluster.ctl(index, &["pools", "app"]);
    assert!(status.success(), "{out}{err}");
    out.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_applies_its_file_on_reload_only_when_told_to() {
    let a = HttpBackend::start("a").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[a.address])).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let config: PathBuf = cluster.members[0]
        .process
        .as_ref()
        .expect("running")
        .config_path();
    let text = std::fs::read_to_string(&config).expect("node 1's file");

    // The default: the file is compared, described, not committed.
    let edited = text.replace("algorithm = \"round_robin\"", "algorithm = \"least_connections\"");
    std::fs::write(&config, &edited).expect("write");
    let (status, out, err) = reload_cli(&config).await;
    println!("raftlb reload on a cluster node:\n{out}");
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("differs from the cluster state in 1 way"), "{out}");
    let hint = format!(
        "raftlb ctl --node {} apply --config {}",
        cluster.members[0].raft,
        config.display()
    );
    assert!(out.contains(&hint), "{out}");
    assert!(
        pool_line(&cluster, 1).contains("round_robin"),
        "{}",
        pool_line(&cluster, 1)
    );

    // apply_file_on_reload = true: SIGHUP commits it, every node serves it.
    let applying = edited.replace("[cluster]\n", "[cluster]\napply_file_on_reload = true\n");
    std::fs::write(&config, &applying).expect("write");
    let hangup = Instant::now();
    cluster.members[0]
        .process
        .as_ref()
        .expect("running")
        .signal("HUP");
    let process = cluster.members[0].process.as_ref().expect("running");
    wait::until("the file committed on SIGHUP", Duration::from_secs(10), || {
        process.log().contains("reload (SIGHUP): ")
            && process.log().contains("committed the config file's 1 change")
    })
    .await;
    let committed = hangup.elapsed();
    let line = wait::value("node 2 serves least_connections", Duration::from_secs(5), || {
        let line = pool_line(&cluster, 1);
        line.contains("least_connections").then_some(line)
    })
    .await;
    println!("apply_file_on_reload: committed {committed:.1?} after SIGHUP; node 2: {line}");
}
