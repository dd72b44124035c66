//! A closed-loop UDP DNS load client for the GSLB server (`bench/gslb.sh`):
//!
//!     dnsload --connect IP:PORT [--name www.gslb.test] [--sockets 4]
//!             [--window 16] [--duration 5]
//!
//! `sockets` threads, each with its own UDP socket and `window` queries in
//! flight (an answer, or 200 ms of silence, sends the next), for
//! `duration` seconds. The query is one fixed A question; an answer counts
//! when its ID is one sent and its RCODE is NOERROR. Prints one JSON line:
//! queries, answers, lost, answers/s.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

struct Args {
    connect: SocketAddr,
    name: String,
    sockets: usize,
    window: usize,
    duration: Duration,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        connect: "127.0.0.1:53".parse().map_err(|e| format!("{e}"))?,
        name: "www.gslb.test".to_string(),
        sockets: 4,
        window: 16,
        duration: Duration::from_secs(5),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--connect" => args.connect = value.parse().map_err(|e| format!("--connect: {e}"))?,
            "--name" => args.name = value,
            "--sockets" => args.sockets = number()?.clamp(1, 64) as usize,
            "--window" => args.window = number()?.clamp(1, 1024) as usize,
            "--duration" => args.duration = Duration::from_secs(number()?.clamp(1, 120)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// A query for `name`, type A, class IN, with ID `id` (RD clear).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut bytes = id.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label.as_bytes());
    }
    bytes.extend_from_slice(&[0, 0, 1, 0, 1]);
    bytes
}

/// Runs one socket's loop; `(sent, answered)`.
fn run(args: &Args, base: u16) -> std::io::Result<(u64, u64)> {
    let socket = UdpSocket::bind(if args.connect.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket.connect(args.connect)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let end = Instant::now() + args.duration;
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut id = base;
    for _ in 0..args.window {
        socket.send(&query(id, &args.name))?;
        id = id.wrapping_add(1);
        sent += 1;
    }
    let mut buffer = [0u8; 4096];
    while Instant::now() < end {
        match socket.recv(&mut buffer) {
            Ok(len) if len >= 12 && buffer[3] & 0x0f == 0 => answered += 1,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        socket.send(&query(id, &args.name))?;
        id = id.wrapping_add(1);
        sent += 1;
    }
    Ok((sent, answered))
}

fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("dnsload: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let results: Vec<std::io::Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.sockets)
            .map(|i| {
                let args = &args;
                scope.spawn(move || run(args, (i as u16).wrapping_mul(4096)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a thread panicked")))
            })
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (mut sent, mut answered) = (0, 0);
    for result in results {
        match result {
            Ok((s, a)) => {
                sent += s;
                answered += a;
            }
            Err(e) => {
                eprintln!("dnsload: {e}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "{{\"queries\": {sent}, \"answers\": {answered}, \"lost\": {}, \"answers_per_s\": {:.0}}}",
        sent.saturating_sub(answered),
        answered as f64 / elapsed
    );
}
