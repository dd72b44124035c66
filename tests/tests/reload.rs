//! A standalone node follows its file: restarted with an edited file, it
//! commits the file's differences (one entry) and serves them, rather than
//! its data dir's older state.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::process::{Raftlb, TempDir};
use raftlb_tests::{client, free_port, wait};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A standalone node's file: one HTTP listener on `port` sending to pool
/// `app` of `backends`, balanced by `algorithm`.
fn standalone(data_dir: &Path, port: u16, algorithm: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    format!(
        "[node]\nid = 1\ndata_dir = \"{}\"\ndrain_timeout = \"1s\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:{port}\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nalgorithm = \"{algorithm}\"\nbackends = [{}]\n",
        data_dir.display(),
        list.join(", ")
    )
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
        &standalone(data.path(), port, "round_robin", &[a.address]),
        &[&address],
    )
    .await;
    assert_eq!(client::get(&http, &url).await, (200, "a".to_string()));
    node.terminate();
    assert!(node.wait_exit(Duration::from_secs(10)).await.success());

    // The same data dir, the pool edited: another backend, another algorithm.
    let edited = standalone(data.path(), port, "least_connections", &[b.address]);
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
