//! WebSocket through real `raftlb` processes: the `Upgrade` is passed to
//! the backend, the `101` back, and the tunnel then carries messages both
//! ways for 10 s while the cluster's configuration changes under it; a
//! silent tunnel is closed after the listener's `tunnel_idle_timeout`; on
//! SIGTERM a tunnel is work in flight: it carries on until it ends (and the
//! node then exits at once) or until the drain timeout closes it. Only the
//! listener's `upgrades` become tunnels (`h2c` is served as a plain
//! request), and a refused upgrade's answer streams like any other.

use futures_util::{SinkExt, StreamExt};
use raftlb_tests::backends::ws_echo;
use raftlb_tests::cluster::{Cluster, http_seed, marker};
use raftlb_tests::process::Raftlb;
use raftlb_tests::{free_port, wait};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One node with one http listener in front of `backend`; `extra` goes
/// into `[node]`. Returns the node and the listener's address.
async fn single_node(backend: SocketAddr, node_keys: &str) -> (Raftlb, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[node]\nid = 1\n{node_keys}\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\n\
         tunnel_idle_timeout = \"1s\"\n\n[[pool]]\nname = \"app\"\nbackends = [{{ address = \"{backend}\" }}]\n"
    );
    (Raftlb::start(&config, &[&bind]).await, bind)
}

/// Sends `text` and expects the echo within 2 s.
async fn round_trip(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let echo = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("an echo within 2 s")
        .expect("the tunnel is open")
        .expect("a message");
    assert_eq!(echo, Message::text(format!("ws:{text}")));
}

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
    let (_node, bind) = single_node(backend, "drain_timeout = \"1s\"").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{bind}/"))
        .await
        .expect("upgrade");
    round_trip(&mut ws, "hello").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_an_open_tunnel_and_exits_once_it_closes() {
    let (backend, _task) = ws_echo("ws").await;
    let (mut node, bind) = single_node(backend, "drain_timeout = \"20s\"").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{bind}/"))
        .await
        .expect("upgrade");
    round_trip(&mut ws, "before").await;

    node.terminate();
    let signalled = Instant::now();
    wait::port_closed(&bind, Duration::from_secs(5)).await;
    // The tunnel carries on while the node drains.
    let mut sent = 0;
    while signalled.elapsed() < Duration::from_millis(1500) {
        round_trip(&mut ws, &format!("m{sent}")).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent >= 5, "{sent} round trips after SIGTERM");
    assert!(
        node.try_exit().is_none(),
        "exited with a tunnel open:\n{}",
        node.log()
    );

    ws.close(None).await.expect("close");
    let closed = Instant::now();
    let exit = node.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(exit.code(), Some(0), "{}", node.log());
    assert!(
        closed.elapsed() < Duration::from_secs(3),
        "exited {:?} after the tunnel closed",
        closed.elapsed()
    );
    assert!(node.log().contains("drained"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_closes_a_tunnel_left_open() {
    let (backend, _task) = ws_echo("ws").await;
    // The tunnel's own idle timeout (1 s) is kept from firing by traffic.
    let (mut node, bind) = single_node(backend, "drain_timeout = \"2s\"").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{bind}/"))
        .await
        .expect("upgrade");
    round_trip(&mut ws, "before").await;

    node.terminate();
    let signalled = Instant::now();
    let mut sent = 0;
    let closed = loop {
        assert!(
            signalled.elapsed() < Duration::from_secs(6),
            "the tunnel was still open 6 s after SIGTERM"
        );
        let echoed = async {
            ws.send(Message::text(format!("m{sent}"))).await.ok()?;
            match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => Some(text),
                _ => None,
            }
        };
        match echoed.await {
            Some(text) => assert_eq!(text.as_str(), format!("ws:m{sent}")),
            None => break signalled.elapsed(),
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        closed >= Duration::from_millis(1800),
        "closed {closed:?} after SIGTERM, before the 2 s drain timeout ({sent} round trips)"
    );
    let exit = node.wait_exit(Duration::from_secs(5)).await;
    assert!(exit.success(), "{exit}: {}", node.log());
    assert!(node.log().contains("drain timeout reached"), "{}", node.log());
}

/// Sends `head` on a new connection to `to` and returns the response head
/// and how many body bytes followed it (up to `limit`), with `watch`
/// called every 64 MiB of body.
async fn raw_exchange(to: &str, head: &str, limit: u64, mut watch: impl FnMut(u64)) -> (String, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(to).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut buf = vec![0u8; 256 * 1024];
    let mut seen = Vec::new();
    let (mut body, mut next_watch) = (0u64, 64u64 << 20);
    let mut head_text = None;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("data within 10 s")
            .expect("read");
        if n == 0 {
            break;
        }
        match &head_text {
            None => {
                seen.extend_from_slice(&buf[..n]);
                if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    head_text = Some(String::from_utf8_lossy(&seen[..end]).into_owned());
                    body += (seen.len() - end - 4) as u64;
                }
            }
            Some(_) => body += n as u64,
        }
        if body >= next_watch {
            watch(body);
            next_watch += 64 << 20;
        }
        if body >= limit {
            break;
        }
    }
    (head_text.expect("a response head"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_upgrades_are_tunnelled_and_a_refused_one_streams() {
    let backend = raftlb_tests::backends::HttpBackend::start("plain").await;
    let (node, bind) = single_node(backend.address, "").await;

    // h2c is not a protocol the listener passes on: a plain request, its
    // Upgrade and HTTP2-Settings gone before the backend sees it.
    let echoed = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(&bind).await.expect("connect");
        stream
            .write_all(
                b"GET /headers HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
                  Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            )
            .await
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer.to_ascii_lowercase()
    };
    assert!(echoed.starts_with("http/1.1 200"), "{echoed}");
    assert!(
        !echoed.contains("upgrade") && !echoed.contains("http2-settings"),
        "the backend saw an upgrade: {echoed}"
    );

    // A backend that refuses a WebSocket upgrade with 10 GiB: streamed to
    // the client, never buffered (the node's memory stays flat).
    const SIZE: u64 = 10 << 30;
    let before = node.rss_kib();
    let mut peak = before;
    let started = Instant::now();
    let (head, body) = raw_exchange(
        &bind,
        &format!(
            "GET /bytes?n={SIZE} HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
        SIZE,
        |_| peak = peak.max(node.rss_kib()),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, SIZE);
    let grown = peak.saturating_sub(before);
    println!(
        "a refused upgrade's 10 GiB answer streamed in {:?}; node RSS grew at most {grown} KiB",
        started.elapsed()
    );
    assert!(
        grown < 32 * 1024,
        "RSS grew {grown} KiB: the refused upgrade's body is buffered"
    );
}
