//! Limits and request-smuggling defences through a real `raftlb` process:
//! a slowloris client is cut off at the header timeout; bodies over
//! `max_body_bytes` get 413 (announced or chunked) before a backend sees
//! them; malformed chunked bodies and conflicting lengths get 400 and never
//! reach the backend; `Content-Length` beside `Transfer-Encoding` is
//! dropped (RFC 9112 §6.3) and the body re-framed, so nothing rides along;
//! a stalled body gets 408; `max_connections` caps connections served at
//! once.

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
    let cases: [&[u8]; 3] = [
        // A chunk size that is not hex.
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
        // Two different lengths.
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\nConnection: close\r\n\r\nabc",
        // A transfer coding the proxy does not know.
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n",
    ];
    for request in cases {
        let answer = exchange(&address, request).await;
        assert!(
            status(&answer).starts_with("HTTP/1.1 400") || status(&answer).starts_with("HTTP/1.1 501"),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(backend.served(), 0, "no smuggling attempt reached the backend");

    // Both framings: Transfer-Encoding wins, Content-Length is dropped, and
    // the body is re-framed for the backend. The request hidden after the
    // chunked body is the client's own next request on its own connection,
    // never glued onto another client's: the backend sees one request with
    // an empty body.
    let both = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = exchange(&address, both).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.contains("\r\n\r\n0"),
        "the backend saw an empty body: {answer}"
    );
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
