//! Limits and request-smuggling defences through a real `raftlb` process:
//! a slowloris client is cut off at the header timeout; bodies over
//! `max_body_bytes` get 413 (announced or chunked) before a backend sees
//! them; malformed chunked bodies, conflicting lengths, `Content-Length`
//! beside `Transfer-Encoding` and transfer codings other than `chunked` get
//! 400 (501) and never reach the backend, also after bodies that carry
//! those header names on a keep-alive connection; a stalled body gets 408;
//! an idle keep-alive connection lives until `keepalive_timeout`, not
//! `header_read_timeout`, and a slow head on it is still cut at the
//! latter; `max_connections` caps connections served at once.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::free_port;
use raftlb_tests::process::Raftlb;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(backend: &HttpBackend) -> (Raftlb, String) {
    start_with(backend, "").await
}

/// [`start`] with `extra` listener keys.
async fn start_with(backend: &HttpBackend, extra: &str) -> (Raftlb, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    // The short header timeout is for the slowloris test; it also closes
    // idle keep-alive connections, so a test that keeps them sets its own.
    let header_timeout = if extra.contains("header_read_timeout") {
        ""
    } else {
        "header_read_timeout = \"2s\"\n"
    };
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"1s\"\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"app\"\n\
         {header_timeout}max_body_bytes = 1024\n{extra}\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n",
        backend.address
    );
    let node = Raftlb::start(&config, &[&bind]).await;
    (node, bind)
}

/// Sends `request` and returns the whole answer (until the proxy closes).
async fn exchange(address: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_at_the_header_timeout() {
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start(&backend).await;
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        // One byte of a header a second, never finishing the head.
        for byte in b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: aaaaaaaaaaaaaaaa".iter() {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let mut answer = Vec::new();
    let closed = async { reader.read_to_end(&mut answer).await };
    tokio::select! {
        _ = closed => {}
        () = trickle => panic!("the slow client was never cut off"),
    }
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(4),
        "cut off after {after:?}, the header timeout is 2 s"
    );
    assert_eq!(backend.served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_before_any_backend_sees_them() {
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start(&backend).await;
    let announced = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{}",
        "a".repeat(2000)
    );
    assert_eq!(
        status(&exchange(&address, announced.as_bytes()).await),
        "HTTP/1.1 413 Payload Too Large"
    );
    let chunk = format!("3e8\r\n{}\r\n", "a".repeat(1000));
    let chunked = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    assert_eq!(
        status(&exchange(&address, chunked.as_bytes()).await),
        "HTTP/1.1 413 Payload Too Large"
    );
    assert_eq!(backend.served(), 0, "an oversized body never reaches the backend");

    // Under the limit, both pass; the chunked one arrives whole.
    let small =
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1f4\r\n"
            .to_string()
            + &"b".repeat(500)
            + "\r\n0\r\n\r\n";
    let answer = exchange(&address, small.as_bytes()).await;
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    assert!(answer.ends_with("500"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_get_400_and_never_reach_the_backend() {
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start(&backend).await;
    let cases: [(&[u8], &str); 10] = [
        // A chunk size that is not hex.
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n", "400"),
        // Two different lengths.
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\nConnection: close\r\n\r\nabc", "400"),
        // `chunked` not last.
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "400"),
        // Codings the proxy could not pass on, and chunked twice.
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "501"),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        // Both framings, either order, any case, with a request hidden
        // behind the chunked body (Content-Length would read it as body).
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        (b"POST /upload HTTP/1.1\nHost: x\nTRANSFER-ENCODING: chunked\nContent-Length: 5\n\n0\r\n\r\n", "400"),
    ];
    for (request, expected) in cases {
        let answer = exchange(&address, request).await;
        assert!(
            status(&answer).starts_with(&format!("HTTP/1.1 {expected}")),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(request)
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one answer, then closed: {answer:?}"
        );
    }
    assert_eq!(backend.served(), 0, "no smuggling attempt reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_inside_bodies_do_not_trip_the_check_on_a_keep_alive_connection() {
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start(&backend).await;
    // Bodies that look like heads with both framings, pipelined on one
    // connection, then a real conflict: three answers, then the 400.
    let lookalike = "\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
    let chunk = format!("{:x}\r\n{lookalike}\r\n", lookalike.len());
    let requests = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{lookalike}\
         POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\nX-Trailer: 1\r\n\r\n\
         GET / HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        lookalike.len()
    );
    let answer = exchange(&address, requests.as_bytes()).await;
    // (Bodies have no line end, so a status line may follow one directly.)
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| answer[at..].lines().next())
        .collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 400 Bad Request"
        ],
        "{answer}"
    );
    assert_eq!(backend.served(), 3, "{answer}");
    let len = lookalike.len().to_string();
    assert_eq!(
        answer.matches(&format!("\r\n\r\n{len}")).count(),
        2,
        "both bodies arrived whole: {answer}"
    );
}

/// Reads one response with a `Content-Length` body from `stream`.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .expect("a content-length");
            if answer.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(n > 0, "closed mid-response: {text:?}");
        answer.extend_from_slice(&buf[..n]);
    }
}

/// Waits for the proxy to close `stream`; returns how long that took.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => panic!("still open after {deadline:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_lives_until_keepalive_timeout_not_header_timeout() {
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start_with(
        &backend,
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"3s\"",
    )
    .await;
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.expect("write");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle for twice the header timeout, well inside the keep-alive one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stream.write_all(request).await.expect("write after 2 s idle");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    let after = closed_within(&mut stream, Duration::from_secs(6)).await;
    assert!(
        after >= Duration::from_millis(2800) && after < Duration::from_millis(4500),
        "closed after {after:?} idle; keepalive_timeout is 3 s"
    );
    assert_eq!(backend.served(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_at_keepalive_timeout() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start_with(&backend, "keepalive_timeout = \"1s\"").await;
    let stream = TcpStream::connect(&address).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{address}/"))
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("body");
    let idle = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the idle connection was still open after 5 s");
    ended.expect("join").expect("a clean GOAWAY and close");
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_millis(2500),
        "closed after {after:?} idle; keepalive_timeout is 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_on_a_keep_alive_connection_is_cut_at_the_header_timeout() {
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start_with(
        &backend,
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"10s\"",
    )
    .await;
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // The next head starts at once and never finishes.
    stream.write_all(b"GET / HTTP/1.1\r\nHost:").await.expect("write");
    let after = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_millis(2500),
        "cut after {after:?}; header_read_timeout is 1 s"
    );
    // A connection that never sends a byte gets the same time.
    let mut silent = TcpStream::connect(&address).await.expect("connect");
    let after = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_millis(2500),
        "a silent connection was closed after {after:?}"
    );
    assert_eq!(backend.served(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408() {
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start_with(&backend, "body_timeout = \"1s\"").await;
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let started = Instant::now();
    // 10 of the 100 bytes announced, then nothing.
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "408 after {after:?}"
    );
    // The backend saw the start of the body (it streams) and its end cut off.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_connections_served_at_once() {
    let backend = HttpBackend::start("b").await;
    let (_node, address) = start_with(&backend, "max_connections = 2\nheader_read_timeout = \"30s\"").await;
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two keep-alive connections, each answered and kept open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut buf = vec![0u8; 1024];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    // A third waits in the backlog: no answer while both are open.
    let mut third = TcpStream::connect(&address).await.expect("connect");
    third.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    if let Ok(read) = &early {
        let text = match read {
            Ok(n) => String::from_utf8_lossy(&buf[..*n]).into_owned(),
            Err(e) => e.to_string(),
        };
        panic!("a third connection was served beyond max_connections = 2: {text:?}");
    }
    // One closes: the third is served.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
