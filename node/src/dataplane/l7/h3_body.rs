//! An HTTP/3 request's body as the proxy reads it: the request stream's
//! DATA frames, then its trailers. A request stream that ended with its
//! head (a GET's FIN sent with its HEADERS) is known empty at once, as
//! HTTP/2's END_STREAM flag tells it, so the proxy forwards the request
//! without reading a body ahead.

use super::body::BoxError;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

type RecvHalf = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// One request stream's receiving half, read frame by frame.
pub struct H3Body {
    stream: RecvHalf,
    state: State,
    /// What the look at the stream in [`H3Body::new`] found ready, handed
    /// out first; boxed, as it is rare (a body sent with the head) and the
    /// body is part of every request's future.
    first: Option<Box<Result<Frame<Bytes>, BoxError>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

impl H3Body {
    /// The body of the request whose head was just read from `stream`.
    /// What the stream already holds is read now, without waiting (a
    /// waker that does nothing: a later poll registers the reader's own),
    /// so that a stream already ended makes the body end at once.
    pub fn new(stream: RecvHalf) -> Self {
        let mut body = H3Body {
            stream,
            state: State::Data,
            first: None,
        };
        let mut look = Context::from_waker(Waker::noop());
        if let Poll::Ready(Some(frame)) = body.poll_stream(&mut look) {
            body.first = Some(Box::new(frame));
        }
        body
    }

    /// The stream's next frame.
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match self.state {
                State::Data => match ready!(self.stream.poll_recv_data(cx)) {
                    Ok(Some(mut data)) => {
                        let bytes = data.copy_to_bytes(data.remaining());
                        if !bytes.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(bytes))));
                        }
                    }
                    Ok(None) => self.state = State::Trailers,
                    Err(e) => {
                        self.state = State::Done;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                State::Trailers => {
                    let trailers = ready!(self.stream.poll_recv_trailers(cx));
                    self.state = State::Done;
                    return Poll::Ready(match trailers {
                        Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                        Ok(None) => None,
                        Err(e) => Some(Err(e.into())),
                    });
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

impl std::fmt::Debug for H3Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Body")
            .field("state", &self.state)
            .field("first", &self.first.is_some())
            .finish()
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.first.take() {
            Some(frame) => Poll::Ready(Some(*frame)),
            None => self.poll_stream(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.state == State::Done
    }
}
