//! A closed-loop load client for HTTP/3 and, over the same TLS listener,
//! HTTP/2, so one listener's two protocols are measured by one client
//! (`bench/h3.sh`):
//!
//!     h3load --protocol h3|h2 --connect IP:PORT [--host NAME] [--path /]
//!            [--connections 16] [--streams 8] [--duration 5] [--threads 2]
//!
//! `connections` connections, `streams` requests in flight on each (each
//! sends its next request when its answer is whole), for `duration`
//! seconds, spread over `threads` threads of one single-threaded runtime
//! each. Certificates are not checked. Prints one JSON line: requests,
//! errors, req/s, p50 and p99 latency in ms.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use raftlb_tests::h3::{H3Conn, client_config, tls_config};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    protocol: String,
    connect: SocketAddr,
    host: String,
    path: String,
    connections: usize,
    streams: usize,
    threads: usize,
    duration: Duration,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        protocol: "h3".to_string(),
        connect: "127.0.0.1:443".parse().map_err(|e| format!("{e}"))?,
        host: "localhost".to_string(),
        path: "/".to_string(),
        connections: 16,
        streams: 8,
        threads: 2,
        duration: Duration::from_secs(5),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--protocol" if value == "h3" || value == "h2" => args.protocol = value,
            "--connect" => args.connect = value.parse().map_err(|e| format!("--connect: {e}"))?,
            "--host" => args.host = value,
            "--path" => args.path = value,
            "--connections" => args.connections = number()?.max(1) as usize,
            "--streams" => args.streams = number()?.max(1) as usize,
            "--threads" => args.threads = number()?.max(1) as usize,
            "--duration" => args.duration = Duration::from_secs(number()?.max(1)),
            _ => return Err(format!("unknown flag or value: {flag} {value}")),
        }
    }
    Ok(args)
}

/// What one stream's loop measured.
#[derive(Default)]
struct Measured {
    latencies_us: Vec<u32>,
    errors: u64,
}

fn main() {
    let args = match args() {
        Ok(args) => Arc::new(args),
        Err(e) => {
            eprintln!("h3load: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let deadline = started + args.duration;
    let threads: Vec<_> = (0..args.threads)
        .map(|thread| {
            let args = Arc::clone(&args);
            std::thread::spawn(move || run_thread(&args, thread, deadline))
        })
        .collect();
    let mut all = Measured::default();
    for thread in threads {
        match thread.join() {
            Ok(Ok(measured)) => {
                all.latencies_us.extend(measured.latencies_us);
                all.errors += measured.errors;
            }
            Ok(Err(e)) => {
                eprintln!("h3load: {e}");
                std::process::exit(1);
            }
            Err(_) => {
                eprintln!("h3load: a client thread panicked");
                std::process::exit(1);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let quantile = |q: f64| -> f64 {
        let n = all.latencies_us.len();
        match n {
            0 => 0.0,
            _ => f64::from(all.latencies_us[((n as f64 * q) as usize).min(n - 1)]) / 1000.0,
        }
    };
    println!(
        "{{\"protocol\": \"{}\", \"requests\": {}, \"errors\": {}, \"seconds\": {seconds:.2}, \"rps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}",
        args.protocol,
        all.latencies_us.len(),
        all.errors,
        all.latencies_us.len() as f64 / seconds,
        quantile(0.50),
        quantile(0.99)
    );
}

/// Client thread `thread`'s share of the connections (every `threads`-th),
/// on a single-threaded runtime of its own: a connection's streams and its
/// driver take turns on one thread, without waking each other across
/// threads.
fn run_thread(args: &Arc<Args>, thread: usize, deadline: Instant) -> Result<Measured, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut loops = Vec::new();
        for _ in (thread..args.connections).step_by(args.threads) {
            let streams = match args.protocol.as_str() {
                "h3" => h3_streams(args, deadline).await,
                _ => h2_streams(args, deadline).await,
            };
            loops.extend(streams.map_err(|e| format!("cannot connect: {e}"))?);
        }
        let mut all = Measured::default();
        for handle in loops {
            if let Ok(measured) = handle.await {
                all.latencies_us.extend(measured.latencies_us);
                all.errors += measured.errors;
            }
        }
        Ok(all)
    })
}

type Loop = tokio::task::JoinHandle<Measured>;

/// One HTTP/3 connection and its streams' loops.
async fn h3_streams(args: &Arc<Args>, deadline: Instant) -> Result<Vec<Loop>, String> {
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().map_err(|e| format!("{e}"))?)
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(client_config(None));
    let conn = H3Conn::connect(&endpoint, args.connect, &args.host).await?;
    let uri: http::Uri = format!("https://{}{}", args.host, args.path)
        .parse()
        .map_err(|e| format!("{e}"))?;
    Ok((0..args.streams)
        .map(|_| {
            let (mut conn, uri, endpoint) = (conn.clone(), uri.clone(), endpoint.clone());
            tokio::spawn(async move {
                let _endpoint = endpoint;
                let mut measured = Measured::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match conn.get_uri(uri.clone()).await {
                        Ok((200, _)) => measured.latencies_us.push(sent.elapsed().as_micros() as u32),
                        _ => measured.errors += 1,
                    }
                }
                measured
            })
        })
        .collect())
}

/// One HTTP/2 connection (TLS, ALPN h2) and its streams' loops.
async fn h2_streams(args: &Arc<Args>, deadline: Instant) -> Result<Vec<Loop>, String> {
    let tcp = tokio::net::TcpStream::connect(args.connect)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(None, b"h2")));
    let name = rustls::pki_types::ServerName::try_from(args.host.clone()).map_err(|e| e.to_string())?;
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let uri: http::Uri = format!("https://{}{}", args.host, args.path)
        .parse()
        .map_err(|e| format!("{e}"))?;
    Ok((0..args.streams)
        .map(|_| {
            let (mut sender, uri) = (sender.clone(), uri.clone());
            tokio::spawn(async move {
                let mut measured = Measured::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let request = http::Request::get(uri.clone()).body(Empty::<Bytes>::new());
                    let answered = match request {
                        Ok(request) => match sender.send_request(request).await {
                            Ok(response) => {
                                let ok = response.status() == 200;
                                ok && response.into_body().collect().await.is_ok()
                            }
                            Err(_) => false,
                        },
                        Err(_) => false,
                    };
                    match answered {
                        true => measured.latencies_us.push(sent.elapsed().as_micros() as u32),
                        false => measured.errors += 1,
                    }
                }
                measured
            })
        })
        .collect())
}
