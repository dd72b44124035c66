//! Choosing a backend that answers: one loop for every kind of work
//! ([`reach`]). It takes a slot at the backend the pool offers next
//! ([`reserve`]: a session's backend first, then the balancer's picks),
//! waiting in the pool's queue while the backends it may use are at their
//! `max_connections`; then it opens what the work needs there (a TCP
//! connection for L4, [`connect`]; an HTTP connection for L7, in
//! [`backend_conn`](crate::dataplane::l7::backend_conn)), and when that
//! fails asks for the next backend, up to the pool's `max_connect_attempts`.

use crate::backend::queue::QueueRefusal;
use crate::backend::{ActiveGuard, Backend};
use crate::balance;
use crate::dataplane::proxy_protocol::{self, Origin};
use crate::health::outlier::{self, Outcome};
use crate::view::{Attempts, Next, PoolView};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why no backend could be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("pool \"{0}\" has no backend left to try")]
    NoBackend(String),
    #[error("pool \"{pool}\": {refusal}")]
    Queue { pool: String, refusal: QueueRefusal },
    #[error("backend {address}: connect timed out after {timeout:?}")]
    Timeout { address: SocketAddr, timeout: Duration },
    #[error("backend {address}: {source}")]
    Io { address: SocketAddr, source: io::Error },
}

/// A slot at the next backend of `pool` for this work (`preferred`, a
/// session's, first), waiting in the pool's queue while every backend it
/// may use is full: at most `queue_timeout`, and only if fewer than
/// `max_queue` already wait.
pub async fn reserve(
    pool: &PoolView,
    preferred: Option<SocketAddr>,
    attempts: &mut Attempts,
) -> Result<ActiveGuard, ConnectError> {
    let limits = &pool.spec.limits;
    let refused = |refusal| ConnectError::Queue {
        pool: pool.spec.name.clone(),
        refusal,
    };
    let mut place = None;
    loop {
        let pinned = match pool.next_backend(preferred, attempts) {
            Next::Reserved(guard) => return Ok(guard),
            Next::Exhausted => return Err(ConnectError::NoBackend(pool.spec.name.clone())),
            Next::Full(pinned) => pinned,
        };
        let place = match &mut place {
            Some(place) => place,
            None => place.insert(
                pool.queue
                    .join(limits.max_queue as usize, limits.queue_timeout)
                    .map_err(refused)?,
            ),
        };
        // Newly listening: look once more, since a slot may have freed
        // before this work was counted as waiting for it.
        if !place.listen(pinned.as_ref()) {
            place.wait().await.map_err(refused)?;
        }
    }
}

/// Tries the backends of `pool` ([`reserve`]) until `open` succeeds on one,
/// and returns what it opened with the backend's slot. Each failure counts
/// for the backend's outlier detection; success is the caller's to judge.
pub async fn reach<T, F>(
    pool: &PoolView,
    preferred: Option<SocketAddr>,
    attempts: &mut Attempts,
    mut open: impl FnMut(Arc<Backend>) -> F,
) -> Result<(T, ActiveGuard), ConnectError>
where
    F: Future<Output = Result<T, ConnectError>>,
{
    let mut last_error = None;
    loop {
        let guard = match reserve(pool, preferred, attempts).await {
            Ok(guard) => guard,
            Err(ConnectError::NoBackend(_)) if last_error.is_some() => {
                return Err(last_error.expect("checked"));
            }
            Err(e) => return Err(e),
        };
        match open(Arc::clone(guard.backend())).await {
            Ok(opened) => return Ok((opened, guard)),
            Err(e) => {
                tracing::warn!(pool = %pool.spec.name, error = %e, "connect failed, trying another backend");
                outlier::record(pool, guard.backend(), Outcome::Failure);
                guard.backend().traffic().failure();
                last_error = Some(e);
            }
        }
    }
}

/// Opens a TCP connection for `origin`'s client (an L4 listener's) to one
/// of `pool`'s backends, `preferred` (a sticky session's) first, and sends
/// it the pool's PROXY header if it has one. The guard holds the
/// connection's slot at its backend; the connect time (or the timeout) is
/// the backend's latency sample for peak EWMA.
pub async fn connect(
    pool: &PoolView,
    preferred: Option<SocketAddr>,
    origin: &Origin,
) -> Result<(TcpStream, ActiveGuard), ConnectError> {
    let mut attempts = Attempts::with_hash(balance::source_hash(&pool.spec, origin.client.ip()));
    reach(pool, preferred, &mut attempts, |backend| async move {
        let started = Instant::now();
        let mut connected = connect_one(backend.address(), pool.spec.connect_timeout).await;
        if let (Ok(stream), Some(version)) = (&mut connected, pool.spec.proxy_protocol) {
            let address = backend.address();
            if let Err(source) = proxy_protocol::send(stream, version, Some(origin)).await {
                connected = Err(ConnectError::Io { address, source });
            }
        }
        if let Ok(_) | Err(ConnectError::Timeout { .. }) = &connected
            && pool.samples_latency()
        {
            backend.latency().record(started.elapsed());
        }
        if connected.is_ok() {
            outlier::record(pool, &backend, Outcome::Success);
            backend.traffic().connection();
        }
        connected
    })
    .await
}

/// One connection attempt with a deadline, Nagle off.
pub async fn connect_one(address: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| ConnectError::Timeout { address, timeout })?
        .map_err(|source| ConnectError::Io { address, source })?;
    stream
        .set_nodelay(true)
        .map_err(|source| ConnectError::Io { address, source })?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::test_pool_view;

    /// One backend that takes one piece of work at a time.
    fn queued(max_queue: u32, timeout: Duration) -> Arc<PoolView> {
        let mut spec = balance::test_pool(&[1]);
        spec.limits.max_connections = 1;
        spec.limits.max_queue = max_queue;
        spec.limits.queue_timeout = timeout;
        test_pool_view(spec)
    }

    async fn take(pool: &PoolView) -> Result<ActiveGuard, ConnectError> {
        reserve(pool, None, &mut Attempts::default()).await
    }

    #[tokio::test]
    async fn work_waits_for_a_freed_slot_in_a_bounded_queue() {
        let pool = queued(1, Duration::from_secs(10));
        let held = take(&pool).await.expect("a free slot");
        let waiting = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { take(&pool).await.map(|g| g.backend().address()) })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.queue.queued() != 1 {
            assert!(Instant::now() < deadline, "the second piece of work never queued");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let refused = take(&pool).await.expect_err("the queue holds one");
        assert!(
            matches!(
                refused,
                ConnectError::Queue {
                    refusal: QueueRefusal::Full(1),
                    ..
                }
            ),
            "{refused}"
        );
        drop(held);
        let address = waiting
            .await
            .expect("joined")
            .expect("served once the slot freed");
        assert_eq!(address, pool.backends[0].address());
        assert_eq!(pool.queue.queued(), 0);
        assert_eq!(
            pool.queue
                .refused_full_total
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[tokio::test]
    async fn work_waits_no_longer_than_the_queue_timeout() {
        let pool = queued(8, Duration::from_millis(100));
        let _held = take(&pool).await.expect("a free slot");
        let started = tokio::time::Instant::now();
        let refused = take(&pool).await.expect_err("no slot frees");
        assert!(
            matches!(
                refused,
                ConnectError::Queue {
                    refusal: QueueRefusal::Timeout(_),
                    ..
                }
            ),
            "{refused}"
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(pool.queue.queued(), 0, "the place is given up");
    }

    #[tokio::test]
    async fn no_queue_refuses_at_once() {
        let pool = queued(0, Duration::from_secs(10));
        let _held = take(&pool).await.expect("a free slot");
        assert!(matches!(
            take(&pool).await,
            Err(ConnectError::Queue {
                refusal: QueueRefusal::Full(0),
                ..
            })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_is_served_as_slots_free() {
        let pool = queued(64, Duration::from_secs(10));
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move {
                    let guard = take(&pool).await.expect("served in turn");
                    assert_eq!(guard.backend().active(), 1, "never over max_connections");
                    tokio::task::yield_now().await;
                })
            })
            .collect();
        for waiter in waiters {
            waiter.await.expect("no waiter starves or overshoots");
        }
        assert_eq!(pool.backends[0].active(), 0);
    }
}
