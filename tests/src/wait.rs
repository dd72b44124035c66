//! Waiting on conditions with deadlines, never on sleeps.

use std::time::{Duration, Instant};

/// Polls `condition` every 10 ms until it holds; panics naming `what` after `deadline`.
pub async fn until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `probe` every 5 ms until it returns a value; panics naming `what`
/// after `deadline`.
pub async fn value<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`value`] outside an async runtime: polls `probe` every 10 ms.
pub fn blocking_value<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`value`] with a probe that awaits (an admin call, say); polled every
/// 50 ms.
pub async fn value_of<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until something accepts TCP connections on `address`.
pub async fn port_open(address: &str, deadline: Duration) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {address} to accept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until nothing accepts TCP connections on `address`.
pub async fn port_closed(address: &str, deadline: Duration) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(address).await.is_ok() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {address} to close"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
