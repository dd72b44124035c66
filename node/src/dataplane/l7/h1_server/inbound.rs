//! The client's side of an HTTP/1 connection as the server reads it: the
//! read half and the bytes read from it not consumed yet ([`Inbound`]).
//! Between requests it is the connection's; a request with a body lends
//! it to the body ([`H1Body`]), which reads the body from it as the proxy
//! forwards it and gives it back at the body's end, so the next request
//! can be read. A body dropped before its end keeps it: the connection
//! then closes after the response, its framing lost.
//!
//! An idle keep-alive connection holds no buffer: reading the next head
//! starts in a stack buffer, and only what arrived is copied out of it.

use super::head::BodyFraming;
use crate::dataplane::l7::chunked::{Chunked, Malformed, Step};
use crate::dataplane::l7::rewind::Rewind;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// Room made in the buffer before a read of a head into it.
const READ_SIZE: usize = 8 * 1024;
/// Room made before a read of a body: bodies stream, larger reads.
const BODY_READ_SIZE: usize = 16 * 1024;
/// The stack buffer the first read of a head goes to.
const FIRST_READ: usize = 4 * 1024;

/// The read half of a client connection, boxed once per connection so
/// that a body is one type whatever the transport.
pub type ReadIo = Pin<Box<dyn AsyncRead + Send>>;

/// The client's read side: its stream and what was read and not used.
pub struct Inbound {
    io: ReadIo,
    pub buf: BytesMut,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Inbound {
    pub fn new(io: ReadIo, buf: BytesMut) -> Self {
        Inbound { io, buf }
    }

    /// Reads more of a head into the buffer; `Ok(0)` at the end of the
    /// stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.is_empty() {
            // Idle connections keep no buffer: read onto the stack first.
            let mut stack = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut read = ReadBuf::uninit(&mut stack);
            ready!(self.io.as_mut().poll_read(cx, &mut read))?;
            self.buf.extend_from_slice(read.filled());
            return Poll::Ready(Ok(read.filled().len()));
        }
        self.poll_read_into_buf(cx, READ_SIZE)
    }

    /// Reads more of a body into the buffer (never through the stack).
    fn poll_fill_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.poll_read_into_buf(cx, BODY_READ_SIZE)
    }

    fn poll_read_into_buf(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < size / 4 {
            self.buf.reserve(size);
        }
        tokio_util::io::poll_read_buf(self.io.as_mut(), cx, &mut self.buf)
    }

    /// Gives back the buffer's memory when nothing is in it (an idle
    /// connection's).
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Reads and drops what the client sends, until it closes, `limit`
    /// bytes or an error: a connection closed with input unread would
    /// answer it with a reset, which can destroy the response before the
    /// client reads it (nginx's lingering close).
    pub async fn discard(&mut self, limit: usize) {
        let mut seen = 0;
        while seen < limit {
            self.buf.clear();
            match std::future::poll_fn(|cx| self.poll_fill_body(cx)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen += n,
            }
        }
    }
}

/// Where a request body is in its framing.
#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(Chunked),
}

/// Why a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection before the body's end")]
    Truncated,
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
}

/// A request body read from the client's connection as it is polled.
#[derive(Debug)]
pub struct H1Body {
    /// `None` once the body ended (given back) or failed.
    inbound: Option<Inbound>,
    left: Left,
    /// Where the connection goes back at the body's end (or when the body
    /// is dropped before it).
    back: Option<oneshot::Sender<Returned>>,
}

/// The connection given back by a request body.
#[derive(Debug)]
pub struct Returned {
    pub inbound: Inbound,
    /// The body was read to its end: the next head follows.
    pub ended: bool,
}

impl H1Body {
    /// The body `framing` announces (not `None`), read from `inbound`; the
    /// receiver gets `inbound` back once the body has been read to its end,
    /// or when it is dropped before that.
    pub fn new(inbound: Inbound, framing: BodyFraming) -> (Self, oneshot::Receiver<Returned>) {
        let (back, returned) = oneshot::channel();
        let left = match framing {
            BodyFraming::Chunked => Left::Chunked(Chunked::new()),
            BodyFraming::Length(n) => Left::Length(n),
            BodyFraming::None => Left::Length(0),
        };
        let mut body = H1Body {
            inbound: Some(inbound),
            left,
            back: Some(back),
        };
        body.give_back_at_end();
        (body, returned)
    }

    fn ended(&self) -> bool {
        matches!(self.left, Left::Length(0) | Left::Chunked(Chunked::Done))
    }

    fn give_back_at_end(&mut self) {
        if self.ended()
            && let (Some(inbound), Some(back)) = (self.inbound.take(), self.back.take())
        {
            let _ = back.send(Returned { inbound, ended: true });
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            if self.ended() {
                self.give_back_at_end();
                return Poll::Ready(None);
            }
            let Some(inbound) = self.inbound.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match &mut self.left {
                _ if inbound.buf.is_empty() => Step::More,
                Left::Length(left) => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(inbound.buf.len());
                    *left -= take as u64;
                    Step::Data(inbound.buf.split_to(take).freeze())
                }
                Left::Chunked(decoder) => decoder.step(&mut inbound.buf)?,
            };
            match step {
                Step::Data(data) => {
                    self.give_back_at_end();
                    return Poll::Ready(Some(Ok(data)));
                }
                Step::End => continue,
                Step::More => match ready!(inbound.poll_fill_body(cx)) {
                    Ok(0) => return Poll::Ready(Some(Err(BodyError::Truncated))),
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                },
            }
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        if let (Some(inbound), Some(back)) = (self.inbound.take(), self.back.take()) {
            let _ = back.send(Returned {
                inbound,
                ended: false,
            });
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.poll_data(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            // The connection's framing is lost with it.
            self.inbound = None;
            self.back = None;
        }
        polled.map(|data| data.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Length(n) => SizeHint::with_exact(n),
            Left::Chunked(_) if self.ended() => SizeHint::with_exact(0),
            Left::Chunked(_) => SizeHint::default(),
        }
    }
}

/// A client connection handed to an upgrade's tunnel: what was read past
/// the request head first, then the connection both ways.
pub type Upgraded = Rewind<Halves>;

/// The connection's halves, joined again.
pub struct Halves {
    read: ReadIo,
    write: Pin<Box<dyn AsyncWrite + Send>>,
}

impl std::fmt::Debug for Halves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Halves").finish_non_exhaustive()
    }
}

/// The connection of `inbound` and `write`, for a tunnel.
pub fn upgraded(inbound: Inbound, write: Pin<Box<dyn AsyncWrite + Send>>) -> Upgraded {
    let halves = Halves {
        read: inbound.io,
        write,
    };
    Rewind::new(inbound.buf.freeze(), halves)
}

impl AsyncRead for Halves {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().read.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Halves {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().write.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    fn inbound(prefix: &[u8]) -> (Inbound, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        (Inbound::new(Box::pin(server), BytesMut::from(prefix)), client)
    }

    #[tokio::test]
    async fn a_length_body_is_read_and_the_connection_given_back_with_what_follows() {
        let (inbound, mut client) = inbound(b"abc");
        let (body, returned) = H1Body::new(inbound, BodyFraming::Length(6));
        client.write_all(b"defGET /next").await.unwrap();
        let read = body.collect().await.expect("whole").to_bytes();
        assert_eq!(&read[..], b"abcdef");
        let back = returned.await.expect("given back");
        assert!(back.ended);
        assert_eq!(&back.inbound.buf[..], b"GET /next");
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded() {
        let (inbound, mut client) = inbound(b"3\r\nabc\r\n");
        let (body, returned) = H1Body::new(inbound, BodyFraming::Chunked);
        client.write_all(b"2\r\nde\r\n0\r\n\r\nX").await.unwrap();
        let read = body.collect().await.expect("whole").to_bytes();
        assert_eq!(&read[..], b"abcde");
        assert_eq!(&returned.await.expect("given back").inbound.buf[..], b"X");
    }

    #[tokio::test]
    async fn a_body_cut_short_fails_and_keeps_the_connection() {
        let (inbound, client) = inbound(b"ab");
        let (body, returned) = H1Body::new(inbound, BodyFraming::Length(6));
        drop(client);
        let error = body.collect().await.expect_err("truncated");
        assert!(matches!(error, BodyError::Truncated), "{error}");
        assert!(returned.await.is_err(), "not given back");
    }

    #[tokio::test]
    async fn a_body_dropped_unread_gives_the_connection_back_unfinished() {
        let (inbound, _client) = inbound(b"");
        let (body, returned) = H1Body::new(inbound, BodyFraming::Length(6));
        drop(body);
        assert!(!returned.await.expect("given back").ended);
    }
}
