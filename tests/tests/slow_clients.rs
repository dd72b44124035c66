//! Slow and greedy HTTP clients through a real node, each refusal counted
//! in `/metrics`: a request body trickled below `body_min_rate` gets 408
//! and its connection closed at `body_timeout + received / rate`, while a
//! body at the rate may take longer than `body_timeout` in all; a client
//! that stops reading a large response (HTTP/1, and HTTP/2 from raw frames)
//! is closed `send_timeout` after its writes stall; an HTTP/2 connection
//! with 100 streams never has more than `max_backend_streams` requests at
//! the backend, the rest wait and get 503 past the pool's
//! `response_timeout`; an HTTP/2 header list over `max_header_bytes` gets
//! 431; a head trickled behind a slow HTTP/1 response is cut when that
//! response ends, an HTTP/2 HEADERS frame trickled byte by byte at
//! `header_read_timeout`, and an idle HTTP/2 client that never
//! acknowledges GOAWAY a head's time later. Every wait has a deadline.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::free_port;
use raftlb_tests::process::Raftlb;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Node {
    _process: Raftlb,
    to: SocketAddr,
    metrics: String,
}

impl Node {
    /// A node with listener `web` (plus `listener` keys) sending to pool
    /// `app` (plus `pool` keys) of `backend`, and `/metrics`.
    async fn start(backend: &HttpBackend, listener: &str, pool: &str) -> Node {
        let port = free_port();
        let metrics = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "[node]\nid = 1\ndrain_timeout = \"1s\"\nmetrics = \"{metrics}\"\n\n\
             [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:{port}\"\npool = \"app\"\n\
             {listener}\n\n[[pool]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n{pool}\n",
            backend.address
        );
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let process = Raftlb::start(&config, &[&to.to_string()]).await;
        Node {
            _process: process,
            to,
            metrics,
        }
    }

    /// `raftlb_client_refusals_total` of listener web for `reason`.
    async fn refusals(&self, reason: &str) -> u64 {
        let url = format!("http://{}/metrics", self.metrics);
        let text = raftlb_tests::client::get(&raftlb_tests::client::http1(), &url)
            .await
            .1;
        let label = format!("raftlb_client_refusals_total{{listener=\"web\",reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&label)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits (up to `deadline`) until `reason` has been counted `count` times.
    async fn await_refusals(&self, reason: &str, count: u64, deadline: Duration) {
        let started = Instant::now();
        while self.refusals(reason).await < count {
            assert!(
                started.elapsed() < deadline,
                "{reason} not counted {count} times within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Posts a body of `total` bytes to `/upload`, `piece` bytes every
/// `every`, while reading the answer; returns the answer (read until the
/// node closes, within 15 s) and when its first bytes came. `headers`
/// end the head.
async fn trickle_body(
    to: SocketAddr,
    headers: &str,
    total: usize,
    piece: usize,
    every: Duration,
) -> (String, Duration) {
    let stream = TcpStream::connect(to).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let send = async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: {total}\r\n{headers}\r\n");
        writer.write_all(head.as_bytes()).await?;
        let mut sent = 0;
        while sent < total {
            let n = piece.min(total - sent);
            writer.write_all(&vec![b'x'; n]).await?;
            sent += n;
            tokio::time::sleep(every).await;
        }
        // Half-open: the answer may still come.
        std::future::pending::<std::io::Result<()>>().await
    };
    let receive = async {
        let mut answer = Vec::new();
        let mut first = None;
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| started.elapsed());
            answer.extend_from_slice(&buf[..n]);
        }
        (
            String::from_utf8_lossy(&answer).into_owned(),
            first.unwrap_or_default(),
        )
    };
    let bounded = async {
        tokio::select! {
            answer = receive => answer,
            _ = send => panic!("the body's writer stopped"),
        }
    };
    tokio::time::timeout(Duration::from_secs(15), bounded)
        .await
        .expect("the node answered and closed within 15 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_below_the_minimum_rate_gets_408_and_one_at_the_rate_passes() {
    let backend = HttpBackend::start("b").await;
    let node = Node::start(
        &backend,
        "body_timeout = \"2s\"\nbody_min_rate = 1000\nmax_body_bytes = 1000000",
        "",
    )
    .await;
    // 200 bytes/s: late when 2 s + received/1000 s have passed, ≈ 2.6 s
    // in, and closed. 2000 bytes/s for 5 s: longer than body_timeout,
    // never late (and closed because it asks).
    let (slow, fast) = tokio::join!(
        trickle_body(node.to, "", 100_000, 100, Duration::from_millis(500)),
        trickle_body(
            node.to,
            "Connection: close\r\n",
            10_000,
            200,
            Duration::from_millis(100)
        ),
    );
    let ((slow, slow_after), (fast, fast_after)) = (slow, fast);
    println!("a body at 200 B/s was answered after {slow_after:?}; one at 2000 B/s after {fast_after:?}");
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.to_ascii_lowercase().contains("connection: close"), "{slow}");
    assert!(
        slow_after >= Duration::from_millis(2400) && slow_after < Duration::from_secs(4),
        "408 after {slow_after:?}, due at ≈ 2.6 s"
    );
    assert!(fast.starts_with("HTTP/1.1 200"), "{fast}");
    assert!(fast.ends_with("10000"), "the backend received it whole: {fast}");
    assert!(fast_after >= Duration::from_millis(4500), "{fast_after:?}");
    assert_eq!(node.refusals("body_rate").await, 1);
    assert_eq!(node.refusals("body_timeout").await, 0);
}

/// Reads what `stream` holds until the node's close (EOF or reset);
/// returns the bytes read. Panics if more than `cap` come (the node is
/// still sending) or it takes more than 10 s.
async fn drain_to_close(stream: &mut TcpStream, cap: usize) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
            assert!(
                total <= cap,
                "{total} bytes and still coming: the node kept sending"
            );
        }
    })
    .await;
    drained.expect("the connection was closed");
    total
}

/// A client socket with a small receive buffer, so that its writes stall soon.
fn small_window_socket() -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    socket
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The HTTP/2 connection preface, then SETTINGS (`settings`, id-value pairs).
fn preface(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let payload: Vec<u8> = settings
        .iter()
        .flat_map(|(id, value)| [id.to_be_bytes().as_slice(), &value.to_be_bytes()].concat())
        .collect();
    out.extend(frame(0x4, 0, 0, &payload));
    out
}

/// HEADERS of `GET path` on stream 1 (END_STREAM, END_HEADERS). HPACK:
/// :method GET and :scheme http indexed, :authority and :path literals
/// with indexed names.
fn get_headers(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x41, 2];
    block.extend_from_slice(b"lb");
    block.extend_from_slice(&[0x44, path.len() as u8]);
    block.extend_from_slice(path.as_bytes());
    frame(0x1, 0x1 | 0x4, 1, &block)
}

/// An HTTP/2 `GET path` from raw frames, with windows so large that only
/// TCP can hold the server back: SETTINGS_INITIAL_WINDOW_SIZE and a
/// connection WINDOW_UPDATE to 2³¹−1.
fn http2_get(path: &str) -> Vec<u8> {
    const MAX_WINDOW: u32 = 0x7fff_ffff;
    let mut out = preface(&[(0x4, MAX_WINDOW)]);
    out.extend(frame(0x8, 0, 0, &(MAX_WINDOW - 65_535).to_be_bytes()));
    out.extend(get_headers(path));
    out
}

/// Reads (and ignores) what the node sends until it closes, up to 10 s;
/// returns when it closed.
async fn read_until_closed(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> Instant {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    closed.expect("closed within 10 s");
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_send_timeout() {
    let backend = HttpBackend::start("b").await;
    let node = Node::start(&backend, "send_timeout = \"2s\"", "").await;
    let huge = "/bytes?n=68719476736"; // 64 GiB: never sent whole
    // At most what the kernel buffers on both sides is read after the close.
    const BUFFERED: usize = 64 << 20;

    let mut http1 = small_window_socket().connect(node.to).await.expect("connect");
    let asked = Instant::now();
    http1
        .write_all(format!("GET {huge} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes())
        .await
        .expect("request");
    node.await_refusals("send_timeout", 1, Duration::from_secs(10))
        .await;
    let http1_closed = asked.elapsed();
    let http1_read = drain_to_close(&mut http1, BUFFERED).await;

    let mut http2 = small_window_socket().connect(node.to).await.expect("connect");
    let asked = Instant::now();
    http2.write_all(&http2_get(huge)).await.expect("request");
    node.await_refusals("send_timeout", 2, Duration::from_secs(10))
        .await;
    let http2_closed = asked.elapsed();
    let http2_read = drain_to_close(&mut http2, BUFFERED).await;

    println!(
        "send_timeout 2 s: an HTTP/1 client reading nothing was closed {http1_closed:?} after its request \
         ({http1_read} bytes were buffered), an HTTP/2 one after {http2_closed:?} ({http2_read} bytes)"
    );
    for closed in [http1_closed, http2_closed] {
        assert!(
            closed >= Duration::from_secs(2) && closed < Duration::from_secs(6),
            "closed {closed:?} after the request; send_timeout is 2 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_holds_at_most_max_backend_streams_at_backends() {
    const STREAMS: usize = 100;
    const CAP: usize = 8;
    let backend = HttpBackend::start_slow("slow").await;
    let node = Node::start(
        &backend,
        &format!("max_backend_streams = {CAP}"),
        "response_timeout = \"4s\"",
    )
    .await;
    let stream = TcpStream::connect(node.to).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    // All of them at once on the one connection; each answer's status.
    let burst = |ms: u64| {
        let requests = (0..STREAMS).map(|_| {
            let mut sender = sender.clone();
            let uri = format!("http://lb/slow?ms={ms}");
            async move {
                let request = http::Request::get(uri)
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("a response");
                let status = response.status().as_u16();
                response.into_body().collect().await.expect("body");
                status
            }
        });
        futures_util::future::join_all(requests)
    };
    let count = |statuses: &[u16], status: u16| statuses.iter().filter(|s| **s == status).count();

    // 13 rounds of 8 × 200 ms: every stream served within the 4 s wait.
    let started = Instant::now();
    let quick = tokio::time::timeout(Duration::from_secs(20), burst(200))
        .await
        .expect("answered in time");
    let quick_took = started.elapsed();
    let quick_peak = backend.counters.peak_in_flight.swap(0, SeqCst);

    // 3 s each: two rounds start within 4 s, the rest wait 4 s and get 503.
    let started = Instant::now();
    let slow = tokio::time::timeout(Duration::from_secs(20), burst(3000))
        .await
        .expect("answered in time");
    let slow_took = started.elapsed();
    let slow_peak = backend.counters.peak_in_flight.load(SeqCst);
    let refused = node.refusals("backend_streams").await;
    println!(
        "max_backend_streams {CAP}: {STREAMS} streams of 200 ms served in {quick_took:?}, at most {quick_peak} \
         at the backend at once; {STREAMS} of 3 s: {} served, {} answered 503 ({refused} refusals counted) \
         in {slow_took:?}, at most {slow_peak} at once",
        count(&slow, 200),
        count(&slow, 503),
    );
    assert_eq!(count(&quick, 200), STREAMS, "{quick:?}");
    assert_eq!(quick_peak, CAP, "the cap is reached, never passed");
    assert!(slow_peak <= CAP, "{slow_peak} requests at the backend at once");
    assert_eq!(count(&slow, 200) + count(&slow, 503), STREAMS, "{slow:?}");
    assert!((CAP..=3 * CAP).contains(&count(&slow, 200)), "{slow:?}");
    assert_eq!(refused, count(&slow, 503) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_behind_a_slow_response_is_cut_when_it_ends() {
    let backend = HttpBackend::start_slow("slow").await;
    let node = Node::start(&backend, "header_read_timeout = \"1s\"", "").await;
    let stream = TcpStream::connect(node.to).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    // A request the backend answers in 2.5 s, and the next head begun
    // behind it, a byte every 300 ms, never finished.
    writer
        .write_all(b"GET /slow?ms=2500 HTTP/1.1\r\nHost: lb\r\n\r\nGET / HT")
        .await
        .expect("write");
    let trickle = async move {
        for byte in b"TP/1.1\r\nHost: lb\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            answer = read => answer,
            () = trickle => unreachable!("the trickle never ends"),
        }
    })
    .await
    .expect("closed within 10 s");
    let closed = started.elapsed();
    println!("a head trickled behind a 2.5 s response: closed {closed:?} in");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    assert!(
        closed >= Duration::from_millis(2400) && closed < Duration::from_millis(3200),
        "closed {closed:?} in: its head's 1 s had run out when the 2.5 s response ended"
    );
    assert_eq!(node.refusals("header_timeout").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_header_list_over_max_header_bytes_gets_431() {
    let backend = HttpBackend::start("b").await;
    let node = Node::start(&backend, "max_header_bytes = 16384", "").await;
    let stream = TcpStream::connect(node.to).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut status_with = |value_len: usize| {
        let request = http::Request::get("http://lb/")
            .header("x-big", "a".repeat(value_len))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let sent = sender.send_request(request);
        async move { sent.await.expect("a response").status().as_u16() }
    };
    // Counted decoded (name, value, 32 bytes each), as the limit reads.
    assert_eq!(status_with(8_000).await, 200);
    assert_eq!(status_with(20_000).await, 431);
    assert_eq!(status_with(8_000).await, 200, "the connection lives on");
    assert_eq!(backend.served(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_head_trickled_or_a_goaway_never_acknowledged_is_cut() {
    let backend = HttpBackend::start("b").await;
    let node = Node::start(
        &backend,
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"1s\"",
        "",
    )
    .await;

    // A HEADERS frame a byte every 200 ms (3 s in all, never finished in time).
    let stream = TcpStream::connect(node.to).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(&preface(&[])).await.expect("preface");
    let headers = get_headers("/");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in headers {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        writer
    });
    let trickled = read_until_closed(&mut reader).await - started;
    trickle.abort();

    // Preface and SETTINGS, then silence: idle, sent GOAWAY and PING, and
    // never acknowledging them.
    let mut silent = TcpStream::connect(node.to).await.expect("connect");
    silent.write_all(&preface(&[])).await.expect("preface");
    let started = Instant::now();
    let silent_for = read_until_closed(&mut silent).await - started;

    println!(
        "HTTP/2, header_read_timeout and keepalive_timeout 1 s: a trickled HEADERS frame was cut after \
         {trickled:?}; a client that never acknowledged GOAWAY was closed after {silent_for:?}"
    );
    assert!(
        trickled >= Duration::from_millis(900) && trickled < Duration::from_millis(2000),
        "cut after {trickled:?}"
    );
    assert!(
        silent_for >= Duration::from_millis(1800) && silent_for < Duration::from_millis(3500),
        "closed after {silent_for:?}: idle 1 s, then 1 s to acknowledge"
    );
    assert_eq!(node.refusals("header_timeout").await, 1);
    assert_eq!(backend.served(), 0);
}
