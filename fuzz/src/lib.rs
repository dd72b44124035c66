//! What the fuzz targets share: [`Wire`], an in-memory connection that
//! hands hyper the fuzzer's bytes; [`run`], which polls a future without a
//! runtime (everything it waits on is in memory); and [`seed`], a cluster
//! to apply decoded commands to.

pub mod seed;

use hyper::rt::{Read, ReadBufCursor, Write};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Who is at the other end of a [`Wire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Sends at once and, once it has sent everything, waits for its
    /// responses (hyper's server drops the requests in hand at a close).
    Client,
    /// Sends once a request has been written to it (hyper's client drops
    /// what comes unasked) and closes at the end (which ends a body that
    /// runs to the close).
    Backend,
}

/// A connection whose peer sends `input`, in reads of at most `read_size`
/// bytes; what is written to it is dropped.
#[derive(Debug)]
pub struct Wire<'a> {
    input: &'a [u8],
    read_size: usize,
    peer: Peer,
    /// Something was written to the peer.
    asked: bool,
    /// Reads asked for once `input` was all read.
    dry_reads: Rc<Cell<u32>>,
}

impl<'a> Wire<'a> {
    pub fn new(input: &'a [u8], read_size: usize, peer: Peer) -> Self {
        Wire {
            input,
            read_size: read_size.max(1),
            peer,
            asked: false,
            dry_reads: Rc::default(),
        }
    }

    /// Counts the reads asked for after the input ran out: once the
    /// connection waits for more, nothing else will happen.
    pub fn dry_reads(&self) -> Rc<Cell<u32>> {
        Rc::clone(&self.dry_reads)
    }
}

impl Read for Wire<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.peer == Peer::Backend && !this.asked {
            return Poll::Pending;
        }
        if this.input.is_empty() {
            this.dry_reads.set(this.dry_reads.get() + 1);
            if this.peer == Peer::Client {
                return Poll::Pending;
            }
        }
        let n = buf.remaining().min(this.read_size).min(this.input.len());
        let (now, rest) = this.input.split_at(n);
        buf.put_slice(now);
        this.input = rest;
        Poll::Ready(Ok(()))
    }
}

impl Write for Wire<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().asked |= !buf.is_empty();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls `future` until it is ready (hyper yields now and then even when
/// it could go on), or until it has waited on a dry [`Wire`] a few times;
/// `None` if it was not ready by then.
pub fn run<F: Future>(future: F, dry_reads: &Cell<u32>) -> Option<F::Output> {
    /// Far more than any input takes; a stuck future fails the target.
    const MAX_POLLS: usize = 1_000_000;
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..MAX_POLLS {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        if dry_reads.get() > 2 {
            return None;
        }
    }
    panic!("still pending after {MAX_POLLS} polls, with input left to read");
}
