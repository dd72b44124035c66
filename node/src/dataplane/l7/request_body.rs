//! The body a backend receives. A body of announced length streams
//! through as it arrives. A chunked body (no length) is read ahead up to
//! [`READ_AHEAD`] bytes before any backend is chosen, so a malformed one
//! is answered 400 without a backend seeing the request (request
//! smuggling), and a small one goes on with a `Content-Length`; a longer
//! one streams on after what was read ahead. Either way the body is cut
//! off ([`Cut`]) once it passes the listener's `max_body_bytes` (413), or
//! when its next piece does not arrive within `body_timeout` (408: a
//! client stalling a body would hold a backend connection; nginx's
//! `client_body_timeout`).

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How much of a chunked body is read before the request is forwarded.
pub const READ_AHEAD: usize = 64 * 1024;

/// Why the proxy cut a client's request body off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Cut {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the request body stalled for {0:?}")]
    TimedOut(Duration),
}

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Malformed framing, or the client went away.
    #[error(transparent)]
    Client(#[from] hyper::Error),
    #[error(transparent)]
    Cut(#[from] Cut),
}

/// The listener's limits on a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub timeout: Duration,
}

impl BodyLimits {
    /// A listener's limits on bodies.
    pub fn of(limits: &raftlb_config::HttpLimits) -> Self {
        BodyLimits {
            max_bytes: limits.max_body_bytes,
            timeout: limits.body_timeout,
        }
    }
}

#[derive(Debug)]
pub struct RequestBody {
    /// Read ahead, sent first.
    ahead: Option<Bytes>,
    /// The rest, if the body had not ended.
    rest: Option<Incoming>,
    limits: BodyLimits,
    /// Bytes handed on so far; `u64::MAX` once [spent](RequestBody::spent).
    seen: u64,
    /// When the next piece must have arrived (while there is a rest).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    /// Streams `body` as it arrives.
    pub fn streaming(body: Incoming, limits: BodyLimits) -> Self {
        RequestBody {
            ahead: None,
            rest: Some(body),
            limits,
            seen: 0,
            deadline: Some(Box::pin(tokio::time::sleep(limits.timeout))),
        }
    }

    /// A body already read whole (maybe empty).
    pub fn complete(bytes: Bytes) -> Self {
        RequestBody {
            ahead: Some(bytes),
            rest: None,
            limits: BodyLimits {
                max_bytes: u64::MAX,
                timeout: Duration::ZERO,
            },
            seen: 0,
            deadline: None,
        }
    }

    /// A body handed on already ([`RequestBody::take`]): empty, and never
    /// whole, so that nothing sends it again.
    pub fn spent() -> Self {
        RequestBody {
            seen: u64::MAX,
            ..RequestBody::complete(Bytes::new())
        }
    }

    /// The body, leaving this one [spent](RequestBody::spent).
    pub fn take(&mut self) -> Self {
        std::mem::replace(self, RequestBody::spent())
    }

    /// The whole body, if it was read whole and none of it sent yet: what
    /// a retry can send again.
    pub fn whole(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::new();
        match (&self.rest, self.seen) {
            (None, 0) => Some(self.ahead.as_ref().unwrap_or(&EMPTY)),
            _ => None,
        }
    }

    /// Reads a chunked body ahead (see the module's doc); `Err` for a
    /// malformed, oversized or late one, before anything was forwarded.
    pub async fn read_ahead(mut body: Incoming, limits: BodyLimits) -> Result<Self, RequestBodyError> {
        let mut ahead = BytesMut::new();
        while ahead.len() < READ_AHEAD {
            let frame = tokio::time::timeout(limits.timeout, body.frame())
                .await
                .map_err(|_| Cut::TimedOut(limits.timeout))?;
            match frame {
                None => {
                    return Ok(RequestBody {
                        ahead: Some(ahead.freeze()),
                        rest: None,
                        limits,
                        seen: 0,
                        deadline: None,
                    });
                }
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        ahead.extend_from_slice(&data);
                    }
                    if ahead.len() as u64 > limits.max_bytes {
                        return Err(Cut::TooLarge(limits.max_bytes).into());
                    }
                }
            }
        }
        Ok(RequestBody {
            ahead: Some(ahead.freeze()),
            rest: Some(body),
            limits,
            seen: 0,
            deadline: Some(Box::pin(tokio::time::sleep(limits.timeout))),
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
        let timeout = self.limits.timeout;
        match &polled {
            Poll::Pending
                if self
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready()) =>
            {
                return Poll::Ready(Some(Err(Cut::TimedOut(timeout).into())));
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(deadline) = self.deadline.as_mut() {
                    deadline.as_mut().reset(Instant::now() + timeout);
                }
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if self.seen > self.limits.max_bytes {
                        return Poll::Ready(Some(Err(Cut::TooLarge(self.limits.max_bytes).into())));
                    }
                }
            }
            _ => {}
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

/// The cut, if `error` (from sending a request) came from one.
pub fn cut(error: &(dyn std::error::Error + 'static)) -> Option<Cut> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(cut) = e.downcast_ref::<Cut>() {
            return Some(*cut);
        }
        if let Some(RequestBodyError::Cut(cut)) = e.downcast_ref::<RequestBodyError>() {
            return Some(*cut);
        }
        cause = e.source();
    }
    None
}
