//! The body a client receives: either a backend's response streaming through
//! frame by frame (never buffered whole), or a small local response such as a
//! 502. When a backend's body has been read to its end, its keep-alive
//! connection goes back to the worker's idle pool; a body dropped early
//! (client gone) takes its connection down with it, since the connection
//! still holds unread bytes.

use crate::dataplane::upstream::{self, Sender};
use crate::view::ActiveGuard;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug)]
pub enum ProxyBody {
    Upstream(UpstreamBody),
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn local(text: &'static str) -> Self {
        ProxyBody::Local(Full::new(Bytes::from_static(text.as_bytes())))
    }

    pub fn bytes(bytes: Bytes) -> Self {
        ProxyBody::Local(Full::new(bytes))
    }
}

/// A backend's response body, holding the connection it came on and the
/// in-flight count of its backend until the body ends.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    sender: Option<Sender>,
    guard: Option<ActiveGuard>,
    /// Whether the connection is TLS (idle connections are kept apart).
    tls: bool,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, sender: Sender, guard: ActiveGuard, tls: bool) -> Self {
        let mut body = UpstreamBody {
            inner,
            sender: Some(sender),
            guard: Some(guard),
            tls,
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// The response is complete: reuse the connection, stop counting the request.
    fn release(&mut self) {
        if let (Some(sender), Some(guard)) = (self.sender.take(), self.guard.take()) {
            upstream::put_idle(guard.backend().address(), self.tls, sender);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => {
                self.sender = None;
                self.guard = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Local(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Local(body) => body.size_hint(),
        }
    }
}
