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

/// [`get`] that reports a failure instead of panicking: the error, or
/// the status and body.
pub async fn try_get(client: &HttpClient, url: &str) -> Result<(u16, String), String> {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
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

/// What [`raw_get`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    pub status: u16,
    /// Each `Set-Cookie` value.
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// One `GET path` on its own connection to `target`, from `source` (any
/// 127.0.0.0/8 address, to act as another client) with extra `headers`.
/// `None` when the connection or the reply failed.
pub async fn raw_get(
    target: std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<RawReply> {
    raw_request(target, source, "GET", path, headers).await
}

/// [`raw_get`] with any method; a `Host` among `headers` replaces the default.
pub async fn raw_request(
    target: std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<RawReply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    if let Some(ip) = source {
        socket.bind((ip, 0).into()).ok()?;
    }
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(5), socket.connect(target))
        .await
        .ok()?
        .ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str("Host: test\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let set_cookies = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.trim().to_string())
        .collect();
    // The test backends answer with Content-Length, so the body is whole.
    Some(RawReply {
        status,
        set_cookies,
        body: body.to_string(),
    })
}
