//! Load through a VIP for the namespaced tests ([`site`](crate::site)):
//! [`Load`] requests it from one host at a constant rate, each request on
//! a new connection, and keeps every [`Attempt`] with what came back.

use crate::netns;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request through the VIP: its `X-Request-Id`, when it started and
/// ended, whether it got a 200.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: u64,
    /// The VIP port it went to (8080 `http`, 9000 `tcp`).
    pub port: u16,
    pub start: Instant,
    /// When its connection was made, if it was.
    pub connected: Option<Instant>,
    pub end: Instant,
    pub ok: bool,
    /// What came back: the status line, or how the request failed.
    pub outcome: String,
}

/// The failed ones of `attempts`, a line each: id, port, how long it took,
/// what came back.
pub fn failures(attempts: &[Attempt]) -> Vec<String> {
    (attempts.iter().filter(|a| !a.ok))
        .map(|a| {
            format!(
                "#{} port {} after {:?}: {}",
                a.id,
                a.port,
                a.end - a.start,
                a.outcome
            )
        })
        .collect()
}

/// How often a request starts.
const PERIOD: Duration = Duration::from_millis(5);
/// The most requests under way at once for a quick client.
const IN_FLIGHT: usize = 8;
/// The longest connect timeout of a quick client.
const QUICK: Duration = Duration::from_millis(100);

/// Requests to the VIP from one host at a constant rate, each on a new
/// connection, until dropped.
#[derive(Debug)]
pub struct Load {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn idle() -> Load {
        Load {
            attempts: Arc::default(),
            stop: Arc::default(),
            thread: None,
        }
    }

    /// Starts requesting `vip` port 8080 from namespace `ns` every 5 ms,
    /// with `X-Request-Id` 0, 1, 2, …; a connection not made within
    /// `connect_timeout` is a failed request.
    pub fn start(ns: &str, vip: IpAddr, connect_timeout: Duration) -> Load {
        Self::start_on(ns, vip, &[8080], connect_timeout, 0)
    }

    /// [`Load::start`] with ids from `first_id` on, and the n-th request
    /// sent to port `ports[n % len]`. A quick client (a connect timeout of
    /// [`QUICK`] or less: the failover figures) starts a request every 5 ms
    /// whether or not those before it have ended (up to [`IN_FLIGHT`] at
    /// once), so an outage's end shows within 5 ms, not a connect timeout
    /// later; a patient one makes one request at a time, 5 ms apart.
    pub fn start_on(ns: &str, vip: IpAddr, ports: &[u16], connect_timeout: Duration, first_id: u64) -> Load {
        let mut load = Load::idle();
        let (ns, attempts, stop) = (ns.to_string(), Arc::clone(&load.attempts), Arc::clone(&load.stop));
        let ports = ports.to_vec();
        load.thread = Some(std::thread::spawn(move || {
            // Threads started from here are in the namespace too.
            netns::enter(&ns);
            let most = if connect_timeout <= QUICK { IN_FLIGHT } else { 1 };
            let mut in_flight: Vec<std::thread::JoinHandle<()>> = Vec::new();
            let mut next = Instant::now();
            for (id, port) in (first_id..).zip(ports.iter().cycle()) {
                loop {
                    in_flight.retain(|request| !request.is_finished());
                    if in_flight.len() < most || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (attempts, port) = (Arc::clone(&attempts), *port);
                in_flight.push(std::thread::spawn(move || {
                    let start = Instant::now();
                    let (ok, connected, outcome) = request(SocketAddr::new(vip, port), connect_timeout, id);
                    let end = Instant::now();
                    attempts.lock().expect("attempts").push(Attempt {
                        id,
                        port,
                        start,
                        connected,
                        end,
                        ok,
                        outcome,
                    });
                }));
                next = (next + PERIOD).max(Instant::now());
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            for request in in_flight {
                let _ = request.join();
            }
        }));
        load
    }

    /// When the first request that started after `since` got a 200 ended.
    pub fn answered_since(&self, since: Instant) -> Option<Instant> {
        let attempts = self.attempts.lock().expect("attempts");
        attempts
            .iter()
            .filter(|a| a.ok && a.start > since)
            .map(|a| a.end)
            .min()
    }

    /// Every request so far, in the order they started.
    pub fn attempts(&self) -> Vec<Attempt> {
        let mut attempts = self.attempts.lock().expect("attempts").clone();
        attempts.sort_by_key(|a| a.id);
        attempts
    }

    /// Requests started after `since`: (all, failed).
    pub fn counts_since(&self, since: Instant) -> (usize, usize) {
        let attempts = self.attempts.lock().expect("attempts");
        let after: Vec<&Attempt> = attempts.iter().filter(|a| a.start > since).collect();
        (after.len(), after.iter().filter(|a| !a.ok).count())
    }

    /// Stops requesting, waits for the requests in flight, and returns
    /// every attempt.
    pub fn finish(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.attempts()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET /` with `X-Request-Id: id`; whether it got a 200, and when the
/// connection was made (if it was).
pub(crate) fn request(to: SocketAddr, connect_timeout: Duration, id: u64) -> (bool, Option<Instant>, String) {
    let mut stream = match TcpStream::connect_timeout(&to, connect_timeout) {
        Ok(stream) => stream,
        Err(e) => return (false, None, format!("connect: {e}")),
    };
    let connected = Some(Instant::now());
    // A patient client (a long connect timeout) waits as long for the answer.
    let _ = stream.set_read_timeout(Some(connect_timeout.max(Duration::from_millis(300))));
    let head = format!("GET / HTTP/1.1\r\nHost: vip\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(head.as_bytes()) {
        return (false, connected, format!("write: {e}"));
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let status = answer.split(|b| *b == b'\r').next().unwrap_or_default();
    let outcome = match read {
        Err(e) if answer.is_empty() => format!("read: {e}"),
        _ if answer.is_empty() => "closed without an answer".to_string(),
        _ => String::from_utf8_lossy(status).into_owned(),
    };
    (answer.starts_with(b"HTTP/1.1 200"), connected, outcome)
}

/// p-th percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
