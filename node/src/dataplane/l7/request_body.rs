//! The body a backend receives. A body of announced length streams
//! through as it arrives. A chunked body (no length) is read ahead up to
//! [`READ_AHEAD`] bytes before any backend is chosen, so a malformed one
//! is answered 400 without a backend seeing the request (request
//! smuggling), and a small one goes on with a `Content-Length`; a longer
//! one streams on after what was read ahead. Either way the body is cut
//! off with [`TooLarge`] once it passes the listener's `max_body_bytes`.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// How much of a chunked body is read before the request is forwarded.
pub const READ_AHEAD: usize = 64 * 1024;

/// The client's request body passed the listener's limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {limit} bytes")]
pub struct TooLarge {
    pub limit: u64,
}

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Malformed framing, or the client went away.
    #[error(transparent)]
    Client(#[from] hyper::Error),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

#[derive(Debug)]
pub struct RequestBody {
    /// Read ahead, sent first.
    ahead: Option<Bytes>,
    /// The rest, if the body had not ended.
    rest: Option<Incoming>,
    limit: u64,
    seen: u64,
}

impl RequestBody {
    /// Streams `body` as it arrives.
    pub fn streaming(body: Incoming, limit: u64) -> Self {
        RequestBody {
            ahead: None,
            rest: Some(body),
            limit,
            seen: 0,
        }
    }

    /// Reads a chunked body ahead (see the module's doc); `Err` for a
    /// malformed or oversized one, before anything was forwarded.
    pub async fn read_ahead(mut body: Incoming, limit: u64) -> Result<Self, RequestBodyError> {
        let mut ahead = BytesMut::new();
        while ahead.len() < READ_AHEAD {
            match body.frame().await {
                None => {
                    return Ok(RequestBody {
                        ahead: Some(ahead.freeze()),
                        rest: None,
                        limit,
                        seen: 0,
                    });
                }
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        ahead.extend_from_slice(&data);
                    }
                    if ahead.len() as u64 > limit {
                        return Err(TooLarge { limit }.into());
                    }
                }
            }
        }
        Ok(RequestBody {
            ahead: Some(ahead.freeze()),
            rest: Some(body),
            limit,
            seen: 0,
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        if let Some(ahead) = self.ahead.take() {
            self.seen += ahead.len() as u64;
            if !ahead.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(ahead))));
            }
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.seen += data.len() as u64;
            if self.seen > self.limit {
                let limit = self.limit;
                return Poll::Ready(Some(Err(TooLarge { limit }.into())));
            }
        }
        polled.map(|frame| frame.map(|result| result.map_err(RequestBodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.as_ref().is_none_or(Bytes::is_empty)
            && self.rest.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.ahead.as_ref().map_or(0, |a| a.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(ahead),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + ahead);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + ahead);
                }
                hint
            }
        }
    }
}

/// The limit, if `error` (from sending a request) came from a body over it.
pub fn too_large(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(too_large) = e.downcast_ref::<TooLarge>() {
            return Some(too_large.limit);
        }
        cause = e.source();
    }
    None
}
