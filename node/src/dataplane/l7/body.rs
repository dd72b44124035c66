//! The body a client receives: either a backend's response streaming through
//! frame by frame (never buffered whole), or a small local response such as a
//! 502. When a backend's body has been read to its end, its keep-alive
//! connection goes back to the worker's idle pool; a body dropped early
//! (client gone) takes its connection down with it, since the connection
//! still holds unread bytes.

use super::backend_conn::{self, BackendBody, Sender};
use crate::backend::ActiveGuard;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a body fails with: a backend's connection error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// A backend's response body, holding the in-flight count of its backend
/// until the body ends, and (HTTP/1.1) the connection it comes on.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: BackendBody,
    guard: Option<ActiveGuard>,
    /// Whether the connection is TLS (idle connections are kept apart).
    tls: bool,
}

impl UpstreamBody {
    pub fn new(inner: BackendBody, guard: ActiveGuard, tls: bool) -> Self {
        let mut body = UpstreamBody {
            inner,
            guard: Some(guard),
            tls,
        };
        if body.is_end_stream() {
            body.release();
        }
        body
    }

    /// The response is complete: reuse the connection, stop counting the request.
    fn release(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        if let BackendBody::Http1(body) = &mut self.inner
            && let Some(conn) = body.reusable()
        {
            backend_conn::put_idle(guard.backend().address(), self.tls, Sender::Http1(conn));
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled: Poll<Option<Result<Frame<Bytes>, BoxError>>> = match &mut self.inner {
            BackendBody::Http1(body) => body
                .poll_data(cx)
                .map(|data| data.map(|data| data.map(Frame::data).map_err(BoxError::from))),
            BackendBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BoxError::from))),
        };
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.is_end_stream() => self.release(),
            // The connection is gone with the error; stop counting.
            Poll::Ready(Some(Err(_))) => self.guard = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            BackendBody::Http1(body) => body.is_end_stream(),
            BackendBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BackendBody::Http1(body) => match body.exact_len() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            BackendBody::Hyper(body) => body.size_hint(),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
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
