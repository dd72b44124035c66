//! A client's request body, whichever server read its head: raftlb's own
//! HTTP/1 server ([`H1Body`]), hyper's HTTP/2 one ([`Incoming`]) or the
//! HTTP/3 one ([`H3Body`]).

use super::body::BoxError;
use super::h1_server::H1Body;
use super::h3_body::H3Body;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug)]
pub enum ClientBody {
    /// The head said there is none.
    Empty,
    Http1(H1Body),
    Http2(Incoming),
    Http3(H3Body),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            ClientBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            ClientBody::Http3(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Http2(body) => body.is_end_stream(),
            ClientBody::Http3(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body) => body.size_hint(),
            ClientBody::Http3(body) => body.size_hint(),
        }
    }
}
