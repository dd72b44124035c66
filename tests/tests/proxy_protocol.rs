//! The PROXY protocol and trusted `X-Forwarded-For`, through real `raftlb`
//! processes (and HAProxy, where installed): a listener with
//! `accept_proxy` takes the client from a trusted balancer's header and
//! refuses the rest (counted); a pool with `proxy_protocol` names the
//! client to its backends, on connections no other client's requests
//! share; `trusted_proxies` keeps a trusted peer's forwarding headers and
//! replaces anyone else's. Client sources are distinct 127.0.0.x addresses.

use raftlb_tests::process::{Raftlb, TempDir};
use raftlb_tests::{free_port, wait};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn source(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Reads a PROXY header (v1 or v2) off `reader`: the source it names, or
/// `"local"`.
async fn read_proxy_header(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let first = reader.fill_buf().await.ok()?.first().copied()?;
    if first == b'P' {
        let mut line = String::new();
        reader.read_line(&mut line).await.ok()?;
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        return match fields.as_slice() {
            ["PROXY", "UNKNOWN", ..] => Some("local".to_string()),
            ["PROXY", _, src, _, sport, _] => Some(format!("{src}:{sport}")),
            _ => None,
        };
    }
    let mut fixed = [0u8; 16];
    reader.read_exact(&mut fixed).await.ok()?;
    if &fixed[..12] != V2_SIGNATURE {
        return None;
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([fixed[14], fixed[15]]))];
    reader.read_exact(&mut body).await.ok()?;
    match (fixed[12], fixed[13]) {
        (0x20, _) => Some("local".to_string()),
        (0x21, 0x11) => {
            let ip = IpAddr::from([body[0], body[1], body[2], body[3]]);
            Some(format!("{ip}:{}", u16::from_be_bytes([body[8], body[9]])))
        }
        _ => None,
    }
}

/// An HTTP/1.1 backend (keep-alive) that answers every request with what
/// it was told about the client: `proxy=<the connection's PROXY source or
/// ->;xff=<X-Forwarded-For or ->;proto=<X-Forwarded-Proto or ->`.
async fn http_backend(expects_proxy: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let proxy = match expects_proxy {
                    true => match read_proxy_header(&mut reader).await {
                        Some(source) => source,
                        None => return,
                    },
                    false => "-".to_string(),
                };
                loop {
                    let (mut xff, mut proto) = ("-".to_string(), "-".to_string());
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let Some((name, value)) = line.trim_end().split_once(':') else {
                            break;
                        };
                        match name.to_ascii_lowercase().as_str() {
                            "x-forwarded-for" => xff = value.trim().to_string(),
                            "x-forwarded-proto" => proto = value.trim().to_string(),
                            _ => {}
                        }
                    }
                    let body = format!("proxy={proxy};xff={xff};proto={proto}");
                    let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// A TCP backend that reads a PROXY header, writes `source=<what it
/// named>\n`, then echoes.
async fn tcp_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let named = read_proxy_header(&mut reader)
                    .await
                    .unwrap_or_else(|| "none".into());
                let _ = reader
                    .get_mut()
                    .write_all(format!("source={named}\n").as_bytes())
                    .await;
            });
        }
    });
    address
}

/// A connection to `target` from `from`.
async fn try_connect_from(from: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((from, 0).into())?;
    socket.connect(target).await
}

async fn connect_from(from: IpAddr, target: SocketAddr) -> TcpStream {
    try_connect_from(from, target).await.expect("connect")
}

/// One request on its own connection from `from`, after `preamble` (a
/// PROXY header, say); the answer's body, or `None` if the connection was
/// closed without one.
async fn request(from: IpAddr, target: SocketAddr, preamble: &[u8], headers: &str) -> Option<String> {
    // A refused connection may be reset before `connect` returns.
    let mut stream = try_connect_from(from, target).await.ok()?;
    let head = format!("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n");
    stream
        .write_all(&[preamble, head.as_bytes()].concat())
        .await
        .ok()?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

fn listener(name: &str, protocol: &str, port: u16, pool: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nbind = \"127.0.0.1:{port}\"\npool = \"{pool}\"\n{extra}\n\n"
    )
}

fn pool(name: &str, backend: SocketAddr, extra: &str) -> String {
    format!("[[pool]]\nname = \"{name}\"\nbackends = [{{ address = \"{backend}\" }}]\n{extra}\n\n")
}

fn node(metrics: u16, rest: &str) -> String {
    format!("[node]\nid = 1\nmetrics = \"127.0.0.1:{metrics}\"\n\n{rest}")
}

/// The value of `series` on the node's `/metrics`, 0 if absent.
async fn metric(port: u16, series: &str) -> f64 {
    let Some(mut stream) = TcpStream::connect(local(port)).await.ok() else {
        return 0.0;
    };
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Whether HAProxy can be run; a missing one skips the test (saying so)
/// unless `RAFTLB_REQUIRE_TOOLS=1`.
fn haproxy_or_skip(test: &str) -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("RAFTLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{test}: haproxy is required (RAFTLB_REQUIRE_TOOLS=1) but not installed"
        );
        println!("skipping {test}: haproxy is not installed (apt-get install haproxy)");
    }
    found
}

/// HAProxy running `config` until dropped (with the directory holding it).
struct Haproxy {
    child: Child,
    _dir: TempDir,
}

impl Haproxy {
    async fn start(config: &str, listens: SocketAddr) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let path = dir.write("haproxy.cfg", config);
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        wait::port_open(&listens.to_string(), Duration::from_secs(10)).await;
        Haproxy { child, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HAPROXY_DEFAULTS: &str =
    "defaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_sends_v2_and_the_backend_sees_the_client() {
    if !haproxy_or_skip("haproxy_in_front_sends_v2_and_the_backend_sees_the_client") {
        return;
    }
    let backend = http_backend(false).await;
    let (web, metrics, front) = (free_port(), free_port(), free_port());
    let config = node(
        metrics,
        &(listener(
            "web",
            "http",
            web,
            "app",
            "accept_proxy = true\nproxy_trusted = [\"127.0.0.1\"]",
        ) + &pool("app", backend, "")),
    );
    let _raftlb = Raftlb::start(&config, &[&local(web).to_string()]).await;
    let haproxy = format!(
        "{HAPROXY_DEFAULTS}frontend f\n  mode tcp\n  bind 127.0.0.1:{front}\n  default_backend b\n\n\
         backend b\n  mode tcp\n  server raftlb 127.0.0.1:{web} send-proxy-v2\n"
    );
    let _haproxy = Haproxy::start(&haproxy, local(front)).await;
    let body = request(source(2), local(front), b"", "")
        .await
        .expect("an answer through both");
    println!("through HAProxy (send-proxy-v2) and raftlb: {body}");
    assert_eq!(body, "proxy=-;xff=127.0.0.2;proto=http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_sends_v2_before_tls_to_an_https_listener() {
    if !haproxy_or_skip("haproxy_sends_v2_before_tls_to_an_https_listener") {
        return;
    }
    let backend = http_backend(false).await;
    let (web, metrics, front) = (free_port(), free_port(), free_port());
    let dir = TempDir::new("proxy-tls");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["site.test".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let (pem, pem_key) = (
        dir.write("site.pem", &cert.pem()),
        dir.write("site.key", &key.serialize_pem()),
    );
    let certificate = format!(
        "[[certificate]]\nname = \"site\"\ncert = \"{}\"\nkey = \"{}\"\n\n",
        pem.display(),
        pem_key.display()
    );
    let config = node(
        metrics,
        &(certificate
            + &listener(
                "web",
                "https",
                web,
                "app",
                "accept_proxy = true\nproxy_trusted = [\"127.0.0.1\"]",
            )
            + &pool("app", backend, "")),
    );
    let _raftlb = Raftlb::start(&config, &[&local(web).to_string()]).await;
    // HAProxy writes the PROXY header, then speaks TLS to raftlb.
    let haproxy = format!(
        "{HAPROXY_DEFAULTS}frontend f\n  mode tcp\n  bind 127.0.0.1:{front}\n  default_backend b\n\n\
         backend b\n  mode tcp\n  server raftlb 127.0.0.1:{web} send-proxy-v2 ssl verify none sni str(site.test)\n"
    );
    let _haproxy = Haproxy::start(&haproxy, local(front)).await;
    let body = request(source(6), local(front), b"", "")
        .await
        .expect("an answer through HAProxy and raftlb's TLS");
    println!("through HAProxy (send-proxy-v2, then TLS) and an https listener: {body}");
    assert_eq!(body, "proxy=-;xff=127.0.0.6;proto=https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_takes_v1_and_its_pool_sends_v2() {
    let backend = tcp_backend().await;
    let (tcp, metrics) = (free_port(), free_port());
    let config = node(
        metrics,
        &(listener(
            "db",
            "tcp",
            tcp,
            "db",
            "accept_proxy = true\nproxy_trusted = [\"127.0.0.1\"]",
        ) + &pool("db", backend, "proxy_protocol = \"v2\"")),
    );
    let _raftlb = Raftlb::start(&config, &[&local(tcp).to_string()]).await;
    let mut stream = connect_from(source(1), local(tcp)).await;
    let header = format!("PROXY TCP4 203.0.113.7 127.0.0.1 5555 {tcp}\r\n");
    stream.write_all(header.as_bytes()).await.expect("write");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stream).read_line(&mut line),
    )
    .await
    .expect("the backend answers")
    .expect("read");
    println!("TCP, v1 in, v2 out: backend saw {}", line.trim_end());
    assert_eq!(line, "source=203.0.113.7:5555\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_sends_v2_to_haproxy_which_forwards_the_client() {
    if !haproxy_or_skip("a_pool_sends_v2_to_haproxy_which_forwards_the_client") {
        return;
    }
    let backend = http_backend(false).await;
    let (web, metrics, hap) = (free_port(), free_port(), free_port());
    let haproxy = format!(
        "{HAPROXY_DEFAULTS}frontend f\n  mode http\n  bind 127.0.0.1:{hap} accept-proxy\n  option forwardfor\n  default_backend b\n\n\
         backend b\n  mode http\n  server app {backend}\n"
    );
    let _haproxy = Haproxy::start(&haproxy, local(hap)).await;
    let config = node(
        metrics,
        &(listener("tcp", "tcp", web, "hap", "") + &pool("hap", local(hap), "proxy_protocol = \"v2\"")),
    );
    let _raftlb = Raftlb::start(&config, &[&local(web).to_string()]).await;
    let body = request(source(3), local(web), b"", "")
        .await
        .expect("an answer through both");
    println!("raftlb (proxy_protocol v2) to HAProxy (accept-proxy, forwardfor): {body}");
    assert_eq!(body, "proxy=-;xff=127.0.0.3;proto=-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_two_raftlb_keeps_the_client() {
    let backend = http_backend(false).await;
    let echo = tcp_backend().await;
    let (a_web, a_tcp, a_metrics) = (free_port(), free_port(), free_port());
    let (b_web, b_tcp, b_metrics) = (free_port(), free_port(), free_port());
    let trusted = "accept_proxy = true\nproxy_trusted = [\"127.0.0.1\"]";
    let b = node(
        b_metrics,
        &(listener("web", "http", b_web, "app", trusted)
            + &listener("tcp", "tcp", b_tcp, "echo", trusted)
            + &pool("app", backend, "")
            + &pool("echo", echo, "proxy_protocol = \"v1\"")),
    );
    let _b = Raftlb::start(&b, &[&local(b_web).to_string(), &local(b_tcp).to_string()]).await;
    let a = node(
        a_metrics,
        &(listener("web", "http", a_web, "b_web", "")
            + &listener("tcp", "tcp", a_tcp, "b_tcp", "")
            + &pool("b_web", local(b_web), "proxy_protocol = \"v1\"")
            + &pool("b_tcp", local(b_tcp), "proxy_protocol = \"v1\"")),
    );
    let _a = Raftlb::start(&a, &[&local(a_web).to_string(), &local(a_tcp).to_string()]).await;
    let body = request(source(4), local(a_web), b"", "")
        .await
        .expect("an answer through A and B");
    println!("HTTP through raftlb A (v1) and raftlb B (accept_proxy): {body}");
    // A adds the client, and B, told the client by A's header, adds it again.
    assert_eq!(body, "proxy=-;xff=127.0.0.4, 127.0.0.4;proto=http");
    let mut stream = connect_from(source(5), local(a_tcp)).await;
    let mut line = String::new();
    stream.write_all(b"hi").await.expect("write");
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stream).read_line(&mut line),
    )
    .await
    .expect("the backend answers")
    .expect("read");
    println!("TCP through raftlb A and B: backend saw {}", line.trim_end());
    assert!(line.starts_with("source=127.0.0.5:"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_sources_and_bad_headers_are_refused_and_counted() {
    let backend = http_backend(false).await;
    let (web, metrics) = (free_port(), free_port());
    let config = node(
        metrics,
        &(listener(
            "web",
            "http",
            web,
            "app",
            "accept_proxy = true\nproxy_trusted = [\"127.0.0.1\"]\nheader_read_timeout = \"1s\"",
        ) + &pool("app", backend, "")),
    );
    let _raftlb = Raftlb::start(&config, &[&local(web).to_string()]).await;
    let series =
        |reason: &str| format!("raftlb_client_refusals_total{{listener=\"web\",reason=\"{reason}\"}}");
    let v1 = format!("PROXY TCP4 198.51.100.9 127.0.0.1 4000 {web}\r\n");
    let named = request(source(1), local(web), v1.as_bytes(), "").await;
    assert_eq!(named.as_deref(), Some("proxy=-;xff=198.51.100.9;proto=http"));
    // Waiting for the node to listen was a connection with no header too.
    let before = metric(metrics, &series("proxy_header")).await;

    assert_eq!(
        request(source(9), local(web), v1.as_bytes(), "").await,
        None,
        "untrusted"
    );
    wait::value_of("the untrusted source counted", Duration::from_secs(5), || async {
        (metric(metrics, &series("proxy_untrusted")).await == 1.0).then_some(())
    })
    .await;
    // Malformed (a request with no header), too long, and none at all in time.
    assert_eq!(request(source(1), local(web), b"", "").await, None, "no header");
    let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(120));
    assert_eq!(
        request(source(1), local(web), long.as_bytes(), "").await,
        None,
        "too long"
    );
    let silent = connect_from(source(1), local(web)).await;
    let mut closed = Vec::new();
    let ended = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(silent).read_to_end(&mut closed),
    )
    .await;
    assert!(
        ended.is_ok(),
        "a silent connection is closed after header_read_timeout"
    );
    wait::value_of("three bad headers counted", Duration::from_secs(5), || async {
        (metric(metrics, &series("proxy_header")).await == before + 3.0).then_some(())
    })
    .await;
    println!(
        "refusals: proxy_untrusted {}, proxy_header {}",
        metric(metrics, &series("proxy_untrusted")).await,
        metric(metrics, &series("proxy_header")).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_keep_forwarding_headers_others_are_replaced() {
    let backend = http_backend(false).await;
    let (web, metrics) = (free_port(), free_port());
    let config = node(
        metrics,
        &(listener("web", "http", web, "app", "trusted_proxies = [\"127.0.0.2\"]")
            + &pool("app", backend, "")),
    );
    let _raftlb = Raftlb::start(&config, &[&local(web).to_string()]).await;
    let claims = "X-Forwarded-For: 203.0.113.1\r\nX-Forwarded-Proto: https\r\n";
    let trusted = request(source(2), local(web), b"", claims).await.expect("answer");
    let untrusted = request(source(3), local(web), b"", claims).await.expect("answer");
    println!("trusted peer: {trusted}; untrusted peer: {untrusted}");
    assert_eq!(trusted, "proxy=-;xff=203.0.113.1, 127.0.0.2;proto=https");
    assert_eq!(untrusted, "proxy=-;xff=127.0.0.3;proto=http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_connection_with_a_header_serves_one_client() {
    let backend = http_backend(true).await;
    let (web, metrics) = (free_port(), free_port());
    let config = node(
        metrics,
        &(listener("web", "http", web, "app", "") + &pool("app", backend, "proxy_protocol = \"v1\"")),
    );
    let _raftlb = Raftlb::start(&config, &[&local(web).to_string()]).await;
    // Keep-alive to the backend: without the rule, the second client's
    // request would ride the first client's backend connection.
    for round in 0..3 {
        for last in [2, 3] {
            let body = request(source(last), local(web), b"", "").await.expect("answer");
            let named = body.split(';').next().unwrap_or_default().to_string();
            assert!(
                named.starts_with(&format!("proxy=127.0.0.{last}:")),
                "round {round}: a request of 127.0.0.{last} went on {named}"
            );
            assert!(body.contains(&format!("xff=127.0.0.{last};")), "{body}");
        }
    }
    // One client connection, several requests: its backend connection is reused.
    let mut stream = connect_from(source(4), local(web)).await;
    let mut reader = BufReader::new(&mut stream);
    let mut seen = Vec::new();
    for _ in 0..2 {
        reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("head");
            if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = n.trim().parse().expect("a length");
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.expect("body");
        seen.push(String::from_utf8_lossy(&body).into_owned());
    }
    println!("one client, two requests: {seen:?}");
    assert_eq!(seen[0], seen[1], "the same backend connection, the same header");
    assert!(seen[0].starts_with("proxy=127.0.0.4:"), "{seen:?}");
}
