//! An HTTP client for tests (hyper's, HTTP/1.1 or HTTP/2 prior knowledge) and
//! a body that streams N bytes without holding them.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

pub type HttpClient<B = Full<Bytes>> = Client<HttpConnector, B>;

/// A keep-alive HTTP/1.1 client.
pub fn http1<B>() -> HttpClient<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client speaking cleartext with prior knowledge.
pub fn http2() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GETs `url` and returns (status, body as text).
pub async fn get(client: &HttpClient, url: &str) -> (u16, String) {
    let request = Request::get(url).body(Full::new(Bytes::new())).expect("request");
    let response = client.request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A body of `len` zero bytes, produced 64 KiB at a time.
#[derive(Debug)]
pub struct RepeatBody {
    remaining: u64,
    chunk: Bytes,
}

impl RepeatBody {
    pub const CHUNK: usize = 64 * 1024;

    pub fn new(len: u64) -> Self {
        RepeatBody {
            remaining: len,
            chunk: Bytes::from(vec![b'x'; Self::CHUNK]),
        }
    }
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(Self::CHUNK as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
