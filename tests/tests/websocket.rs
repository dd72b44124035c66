//! WebSocket through real `raftlb` processes: the `Upgrade` is passed to
//! the backend, the `101` back, and the tunnel then carries messages both
//! ways for 10 s while the cluster's configuration changes under it; a
//! silent tunnel is closed after the listener's `tunnel_idle_timeout`.

use futures_util::{SinkExt, StreamExt};
use raftlb_tests::backends::ws_echo;
use raftlb_tests::cluster::{Cluster, http_seed, marker};
use raftlb_tests::free_port;
use raftlb_tests::process::Raftlb;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_for_ten_seconds_across_configuration_changes() {
    let (backend, _task) = ws_echo("ws").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[backend])).await;
    let url = format!("ws://{}/chat", cluster.members[0].http);
    let (mut ws, response) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade through the proxy");
    assert_eq!(response.status(), 101);

    let started = Instant::now();
    let (mut sent, mut changes) = (0u32, 0u32);
    while started.elapsed() < Duration::from_secs(10) {
        ws.send(Message::text(format!("m{sent}"))).await.expect("send");
        let echo = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("an echo within 2 s")
            .expect("the tunnel is open")
            .expect("a message");
        assert_eq!(echo, Message::text(format!("ws:m{sent}")));
        sent += 1;
        // Change the replicated configuration every 3 s: backends come and
        // go, the tunnel stays.
        if started.elapsed() > Duration::from_secs(3 * u64::from(changes + 1)) {
            changes += 1;
            let (status, _, err) = cluster.ctl(1, &["backend", "add", "app", &marker(changes).to_string()]);
            assert!(status.success(), "{err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(changes >= 3 && sent >= 80, "{sent} messages, {changes} changes");
    ws.close(None).await.expect("close");
    println!("{sent} WebSocket round trips over 10 s across {changes} configuration changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tunnel_is_closed_after_its_idle_timeout() {
    let (backend, _task) = ws_echo("ws").await;
    let bind = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"1s\"\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\n\
         tunnel_idle_timeout = \"1s\"\n\n[[pool]]\nname = \"app\"\nbackends = [{{ address = \"{backend}\" }}]\n"
    );
    let _node = Raftlb::start(&config, &[&bind]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{bind}/"))
        .await
        .expect("upgrade");
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("open").expect("echo"),
        Message::text("ws:hello")
    );
    let silent = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the silent tunnel was still open after 4 s");
    let after = silent.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before its 1 s idle timeout"
    );
}
