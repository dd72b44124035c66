//! The send timeout's clock: writes to a client that make no progress for
//! the listener's `send_timeout` fail (nginx's `send_timeout`), so a client
//! that stops reading cannot hold its connection, its response and the
//! backend behind it. The clock runs from the first write (or flush) that
//! returned `Pending` and stops at any progress; its timer is made at the
//! first stall and moved only when it fires early, so a client that reads
//! promptly costs no timer operation.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct SendClock {
    timeout: Duration,
    /// When the writes stalled; `None` while they progress.
    stalled_since: Option<Instant>,
    /// At or before `stalled_since + timeout` while stalled.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write has timed out.
    expired: bool,
}

impl SendClock {
    pub fn new(timeout: Duration) -> Self {
        SendClock {
            timeout,
            stalled_since: None,
            timer: None,
            expired: false,
        }
    }

    /// Whether a write has timed out (the connection is done for).
    pub fn expired(&self) -> bool {
        self.expired
    }

    /// Follows one polled write, flush or shutdown: `Pending` starts (or
    /// keeps) the clock and wakes the task when the timeout is due;
    /// anything else is progress. A write stalled for the timeout becomes
    /// a `TimedOut` error.
    pub fn follow<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled_since = None;
            return polled;
        }
        let now = Instant::now();
        let due = *self.stalled_since.get_or_insert(now) + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= due {
                self.expired = true;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {:?}", self.timeout),
                )));
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn pending() -> Poll<io::Result<usize>> {
        Poll::Pending
    }

    fn timed_out(polled: Poll<io::Result<usize>>) -> bool {
        matches!(polled, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::TimedOut)
    }

    // Real time, in steps far apart from the timeout, so a slow machine
    // cannot blur them.
    const TIMEOUT: Duration = Duration::from_millis(400);

    #[tokio::test]
    async fn a_write_stuck_for_the_timeout_fails_and_progress_restarts_the_clock() {
        let mut clock = SendClock::new(TIMEOUT);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(clock.follow(&mut cx, pending()).is_pending());
        tokio::time::sleep(TIMEOUT / 4).await;
        assert!(clock.follow(&mut cx, pending()).is_pending());
        // Progress: the next stall has its whole timeout again.
        assert!(matches!(
            clock.follow(&mut cx, Poll::Ready(Ok(5))),
            Poll::Ready(Ok(5))
        ));
        assert!(clock.follow(&mut cx, pending()).is_pending());
        assert!(!clock.expired());
        tokio::time::sleep(TIMEOUT + TIMEOUT / 4).await;
        assert!(timed_out(clock.follow(&mut cx, pending())));
        assert!(clock.expired());
    }

    #[tokio::test]
    async fn the_timer_wakes_the_stalled_task() {
        let mut clock = SendClock::new(TIMEOUT);
        let started = Instant::now();
        let stalled = std::future::poll_fn(|cx| clock.follow(cx, pending()));
        // Nothing else polls it: only the clock's own timer can end this.
        let result = tokio::time::timeout(TIMEOUT * 10, stalled).await;
        assert!(timed_out(Poll::Ready(result.expect("woken by its timer"))));
        assert!(started.elapsed() >= TIMEOUT);
    }
}
