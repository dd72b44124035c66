//! Real backends on loopback sockets, run inside the test process.
//!
//! [`HttpBackend`] answers by path:
//! - `/` and anything else: its name;
//! - `/slow?ms=N`: its name after N ms (if this backend is slow, see [`HttpBackend::start_slow`]);
//! - `/bytes?n=N`: N bytes streamed in 64 KiB chunks;
//! - `/upload`: reads the request body as it streams and answers its length;
//! - `/headers`: the request headers it received, one `name: value` a line;
//! - `/version`: the HTTP version the request came in (`HTTP/1.1`, `HTTP/2.0`);
//! - `/login?id=ID`: its name, with `Set-Cookie: JSESSIONID=ID` (an
//!   application starting a session).
//!
//! - `/healthz`: `ok`, or 503 while [`Counters::unhealthy`] is set.
//!
//! A request carrying `X-Request-Id: N` (a number) is logged in
//! [`Counters::ids`] as it arrives, with the address it came from and when,
//! so a test can tell which requests a backend really served, and through
//! which balancer.
//!
//! While [`Counters::fail_status`] is set, every path but `/healthz` answers
//! with that status. It counts requests served and requests in flight, and
//! `/healthz` probes apart, so tests can wait on them, and the most
//! requests it ever had in flight at once ([`Counters::peak_in_flight`]).

use crate::client::RepeatBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
pub struct Counters {
    pub served: AtomicUsize,
    pub in_flight: AtomicUsize,
    /// The most requests in flight at once so far.
    pub peak_in_flight: AtomicUsize,
    /// `/healthz` requests answered.
    pub probes: AtomicUsize,
    /// `/healthz` answers 503.
    pub unhealthy: AtomicBool,
    /// Non-zero: every other path answers this status.
    pub fail_status: AtomicU16,
    /// The requests received with an `X-Request-Id`, in order.
    pub ids: std::sync::Mutex<Vec<Logged>>,
}

/// A request with an `X-Request-Id`, as the backend received it.
#[derive(Debug, Clone, Copy)]
pub struct Logged {
    pub id: u64,
    /// The connection's peer: the balancer that forwarded it.
    pub from: std::net::IpAddr,
    pub at: std::time::Instant,
}

#[derive(Debug)]
pub struct HttpBackend {
    pub address: SocketAddr,
    pub counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl HttpBackend {
    /// A backend whose `/slow` answers at once.
    pub async fn start(name: &str) -> HttpBackend {
        Self::spawn(name, false).await
    }

    /// A backend whose `/slow?ms=N` waits N ms.
    pub async fn start_slow(name: &str) -> HttpBackend {
        Self::spawn(name, true).await
    }

    /// A backend serving on `listener`, bound by the caller (say, inside a
    /// network namespace, where the socket stays).
    pub fn serve(name: &str, listener: std::net::TcpListener) -> HttpBackend {
        listener.set_nonblocking(true).expect("nonblocking listener");
        Self::run(
            name,
            false,
            TcpListener::from_std(listener).expect("tokio listener"),
            None,
        )
    }

    /// A backend on loopback that speaks HTTPS with `cert_pem` and `key_pem`.
    pub async fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> HttpBackend {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certificate");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        Self::run(
            name,
            false,
            listener,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    async fn spawn(name: &str, slow: bool) -> HttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        Self::run(name, slow, listener, None)
    }

    fn run(
        name: &str,
        slow: bool,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> HttpBackend {
        let address = listener.local_addr().expect("address");
        let counters = Arc::new(Counters::default());
        let name = Bytes::from(name.to_string());
        let shared = Arc::clone(&counters);
        let task = tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            // Connections end with the backend: dropping it is its death.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let (name, counters, builder) = (name.clone(), Arc::clone(&shared), builder.clone());
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let (name, counters) = (name.clone(), Arc::clone(&counters));
                        async move { Ok::<_, Infallible>(respond(request, peer, name, slow, &counters).await) }
                    });
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        HttpBackend {
            address,
            counters,
            task,
        }
    }

    pub fn served(&self) -> usize {
        self.counters.served.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type BackendBody = Either<Full<Bytes>, RepeatBody>;

async fn respond(
    request: Request<Incoming>,
    peer: SocketAddr,
    name: Bytes,
    slow: bool,
    counters: &Counters,
) -> Response<BackendBody> {
    if request.uri().path() == "/healthz" {
        counters.probes.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(b"ok"))));
        if counters.unhealthy.load(Ordering::SeqCst) {
            *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        }
        return response;
    }
    let in_flight = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    counters.peak_in_flight.fetch_max(in_flight, Ordering::SeqCst);
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(id) = id {
        let logged = Logged {
            id,
            from: peer.ip(),
            at: std::time::Instant::now(),
        };
        counters
            .ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(logged);
    }
    let fail = counters.fail_status.load(Ordering::SeqCst);
    if fail != 0 {
        let mut response = Response::new(Either::Left(Full::new(name)));
        *response.status_mut() = hyper::StatusCode::from_u16(fail).expect("a status");
        counters.served.fetch_add(1, Ordering::SeqCst);
        counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        return response;
    }
    let query_number = |key: &str| -> u64 {
        request
            .uri()
            .query()
            .and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let response = match request.uri().path() {
        "/slow" => {
            if slow {
                tokio::time::sleep(Duration::from_millis(query_number("ms"))).await;
            }
            Response::new(Either::Left(Full::new(name)))
        }
        "/bytes" => Response::new(Either::Right(RepeatBody::new(query_number("n")))),
        "/upload" => {
            let mut body = request.into_body();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    total += data.map(|d| d.len()).unwrap_or(0);
                }
            }
            Response::new(Either::Left(Full::new(Bytes::from(total.to_string()))))
        }
        "/headers" => {
            let text: String = request
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                .collect();
            Response::new(Either::Left(Full::new(Bytes::from(text))))
        }
        "/version" => Response::new(Either::Left(Full::new(Bytes::from(format!(
            "{:?}",
            request.version()
        ))))),
        "/login" => {
            let id = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("id=")))
                .unwrap_or("none")
                .to_string();
            let mut response = Response::new(Either::Left(Full::new(name)));
            if let Ok(cookie) = hyper::header::HeaderValue::from_str(&format!("JSESSIONID={id}; Path=/")) {
                response.headers_mut().insert(hyper::header::SET_COOKIE, cookie);
            }
            response
        }
        _ => Response::new(Either::Left(Full::new(name))),
    };
    counters.served.fetch_add(1, Ordering::SeqCst);
    counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// A backend that accepts TCP connections and never answers: reads what
/// comes and holds each connection open until the task is aborted.
pub async fn blackhole() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            held.spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (address, task)
}

/// A backend that reads each request's head, counts it, and closes the
/// connection without answering: a backend failing before any response byte.
#[derive(Debug)]
pub struct Closer {
    pub address: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Closer {
    /// Request heads read.
    pub fn received(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

pub async fn closer() -> (Closer, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buffer[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    (Closer { address, requests }, task)
}

/// A TCP backend that echoes what it reads and, once the client half-closes,
/// writes `bye` and closes.
pub async fn tcp_echo() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.write_all(b"bye").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (address, task)
}

/// A TCP backend that writes `name` to each connection and closes it.
pub async fn tcp_hello(name: &str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let name = name.as_bytes().to_vec();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(&name).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (address, task)
}

/// A UDP backend that answers each datagram with `NAME:` and the datagram.
pub async fn udp_echo(name: &str) -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    let prefix = format!("{name}:").into_bytes();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let mut reply = prefix.clone();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    (address, task)
}

/// A WebSocket backend that echoes every text or binary message, prefixed
/// with `name:`.
pub async fn ws_echo(name: &str) -> (SocketAddr, JoinHandle<()>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            connections.spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    let reply = match message {
                        Message::Text(text) => Message::text(format!("{name}:{text}")),
                        Message::Binary(data) => Message::binary(data),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (address, task)
}
