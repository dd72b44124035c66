//! HTTP/1.1 to a backend, driven by the task of the request it carries.
//!
//! [`H1Conn::send`] writes the request head (with a body read whole, in the
//! same write), streams any other body (`Content-Length` as announced,
//! else chunked), then reads the response head; the [`ResponseBody`] reads
//! the body straight from the socket as the client side asks for it, and
//! hands the connection back for reuse once it has read the body to its
//! end ([`ResponseBody::reusable`]). There is no connection task, no
//! channel and no wake-up between tasks: on a keep-alive connection a
//! request costs its writes and reads and nothing else. (hyper's client
//! gives each connection a task of its own, and passes every request and
//! response through channels to it; upgrades, which need hyper's
//! connection hand-over, and active health probes still use it.)
//!
//! Response framing follows RFC 9112 §6.3: no body after `HEAD`, `204` or
//! `304`; chunked when `Transfer-Encoding` ends in `chunked` ([`chunked`]);
//! `Content-Length` when every value agrees; else to the end of the
//! connection. Interim `1xx` responses are read and dropped. A connection
//! is reused only when both sides meant to keep it (`HTTP/1.1` without
//! `Connection: close`, or `HTTP/1.0` with `keep-alive`), the whole request
//! body went out, the response had its own framing and nothing follows it.

use super::backend_conn::Transport;
use super::chunked::{self, Chunked, Step};
use super::h1_server::head::parse_length;
use super::headers::{connection_has, list_items};
use super::request_body::{Cut, RequestBody, RequestBodyError};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use std::future::poll_fn;
use std::io;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// Largest response head read (status line and header fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// One keep-alive HTTP/1.1 connection to a backend.
#[derive(Debug)]
pub struct H1Conn {
    io: Transport,
    /// Bytes read and not consumed yet.
    buf: BytesMut,
    /// The request head being written (kept for its capacity).
    out: Vec<u8>,
    /// Has carried a request before.
    reused: bool,
    /// The client connection it was opened for, if its PROXY header names
    /// that client: it is reused for no other ([`backend_conn`](super::backend_conn)).
    owner: Option<u64>,
}

/// Why a request on a backend connection failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the backend closed the connection before its response")]
    Closed,
    #[error("the backend closed the connection in the middle of the response body")]
    Truncated,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Chunked(#[from] chunked::Malformed),
    #[error("request body: {0}")]
    RequestBody(#[from] RequestBodyError),
    #[error("the request body did not match its Content-Length")]
    BodyLength,
    /// From an HTTP/2 backend connection (hyper's client).
    #[error(transparent)]
    Http2(hyper::Error),
}

impl BackendError {
    /// The cut, if the client's body (not the backend) failed the request.
    pub fn cut(&self) -> Option<Cut> {
        match self {
            BackendError::RequestBody(RequestBodyError::Cut(cut)) => Some(*cut),
            BackendError::Http2(e) => super::request_body::cut(e),
            _ => None,
        }
    }
}

/// A failed send; `unsent` when none of the request was written, on a
/// reused connection the backend had closed: the request, intact, can go on
/// a new connection as it is.
#[derive(Debug)]
pub struct SendError {
    pub error: BackendError,
    pub unsent: bool,
}

/// How the request body goes out after the head.
enum Outgoing {
    /// Already written with the head.
    Written,
    Length(u64),
    Chunked,
}

impl H1Conn {
    pub fn new(io: Transport) -> Self {
        H1Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            reused: false,
            owner: None,
        }
    }

    /// This connection, kept for client connection `owner` alone.
    pub fn owned_by(mut self, owner: Option<u64>) -> Self {
        self.owner = owner;
        self
    }

    pub fn owner(&self) -> Option<u64> {
        self.owner
    }

    /// Whether an idle connection can carry another request: the backend
    /// has neither closed it nor sent anything unasked. One read attempt,
    /// which does not wait.
    pub fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io).poll_read(&mut cx, &mut probe).is_pending()
    }

    /// Sends `request` (in origin form, HTTP/1.1, its headers final) and
    /// reads the response head; the body follows in the [`ResponseBody`],
    /// which owns the connection from then on. The request is only read,
    /// except for a body still arriving from the client: that is taken
    /// once the head is out, and the request's body is spent.
    pub async fn send(
        mut self,
        request: &mut Request<RequestBody>,
    ) -> Result<(Response<()>, ResponseBody), SendError> {
        let failed = |error| SendError { error, unsent: false };
        let outgoing = self.encode_head(request).map_err(failed)?;
        let reused = std::mem::replace(&mut self.reused, true);
        let mut written = 0;
        while written < self.out.len() {
            match self.io.write(&self.out[written..]).await {
                Ok(0) => return Err(failed(BackendError::Closed)),
                Ok(n) => written += n,
                Err(e) => {
                    let unsent = written == 0 && reused;
                    return Err(SendError {
                        error: e.into(),
                        unsent,
                    });
                }
            }
        }
        let head_only = request.method() == Method::HEAD;
        let mut keep = true;
        match outgoing {
            Outgoing::Written => {}
            Outgoing::Length(_) | Outgoing::Chunked => match self
                .send_body(request.body_mut().take(), outgoing)
                .await
            {
                Ok(whole) => keep = whole,
                Err(e @ (BackendError::RequestBody(_) | BackendError::BodyLength)) => return Err(failed(e)),
                // The backend may have answered and closed: its answer, if any, is read below.
                Err(e) => {
                    keep = false;
                    if self.buf.is_empty() && !self.io_readable_now() {
                        return Err(failed(e));
                    }
                }
            },
        }
        let (response, framing, backend_keeps) = self.read_head(head_only).await.map_err(failed)?;
        let body = ResponseBody::new(self, framing, keep && backend_keeps);
        Ok((response, body))
    }

    /// Renders the request head into `out`, with the body too when it was
    /// read whole, and says how the rest of the body goes.
    fn encode_head(&mut self, request: &Request<RequestBody>) -> Result<Outgoing, BackendError> {
        let out = &mut self.out;
        out.clear();
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        for part in [request.method().as_str(), " ", target, " HTTP/1.1\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
        for (name, value) in request.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let declared = match request.headers().get(header::CONTENT_LENGTH) {
            None => None,
            Some(value) => Some(parse_length(value.as_bytes()).ok_or(BackendError::BodyLength)?),
        };
        let body = request.body();
        let outgoing = match (body.whole(), declared) {
            (Some(whole), Some(n)) if whole.len() as u64 != n => return Err(BackendError::BodyLength),
            (Some(whole), declared) => {
                if declared.is_none() && (!whole.is_empty() || expects_body(request.method())) {
                    let _ = write!(out, "content-length: {}\r\n", whole.len());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(whole);
                return Ok(Outgoing::Written);
            }
            (None, Some(n)) => Outgoing::Length(n),
            (None, None) => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Outgoing::Chunked
            }
        };
        out.extend_from_slice(b"\r\n");
        Ok(outgoing)
    }

    /// Streams a body the client is still sending. `Ok(false)` when the
    /// backend began its response first: the rest of the body is not sent,
    /// and the connection is not reused.
    async fn send_body(&mut self, mut body: RequestBody, outgoing: Outgoing) -> Result<bool, BackendError> {
        let mut sent = 0u64;
        loop {
            let frame = tokio::select! {
                biased;
                read = poll_fn(|cx| self.poll_fill(cx)) => match read? {
                    0 => return Err(BackendError::Closed),
                    _ if final_response_began(&mut self.buf) => return Ok(false),
                    _ => continue,
                },
                frame = body.frame() => frame,
            };
            let data = match frame {
                None => break,
                Some(frame) => match frame?.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            sent += data.len() as u64;
            match outgoing {
                Outgoing::Length(n) if sent > n => return Err(BackendError::BodyLength),
                Outgoing::Chunked => {
                    let size = format!("{:x}\r\n", data.len());
                    let mut chunk = size.as_bytes().chain(data).chain(&b"\r\n"[..]);
                    self.io.write_all_buf(&mut chunk).await?;
                }
                _ => self.io.write_all(&data).await?,
            }
        }
        match outgoing {
            Outgoing::Length(n) if sent != n => return Err(BackendError::BodyLength),
            Outgoing::Chunked => self.io.write_all(b"0\r\n\r\n").await?,
            _ => {}
        }
        Ok(true)
    }

    /// Reads response heads until a final one (interim `1xx` are dropped).
    async fn read_head(&mut self, head_only: bool) -> Result<(Response<()>, Framing, bool), BackendError> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, head_only)? {
                    Some(Parsed::Final(response, framing, keep)) => return Ok((response, framing, keep)),
                    Some(Parsed::Interim) => continue,
                    None if self.buf.len() >= MAX_HEAD => {
                        return Err(BackendError::Malformed("response head too large"));
                    }
                    None => {}
                }
            }
            if poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(BackendError::Closed);
            }
        }
    }

    /// Whether the backend has sent something (or closed) already.
    fn io_readable_now(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Ready(Ok(n)) if n > 0)
    }

    /// Reads what has arrived into `buf`; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// While a body goes out: drops interim responses (`100 Continue`) at the
/// front of `buf`, and says whether a final response has begun (or
/// something [`H1Conn::read_head`] will refuse, or too much to wait on).
pub fn final_response_began(buf: &mut BytesMut) -> bool {
    while !buf.is_empty() && buf.len() < MAX_HEAD {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut fields);
        let interim = |code: Option<u16>| code.is_some_and(|c| (100..200).contains(&c) && c != 101);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(length)) if interim(parsed.code) => buf.advance(length),
            Ok(httparse::Status::Partial) => return parsed.code.is_some_and(|c| c >= 200),
            _ => return true,
        }
    }
    !buf.is_empty()
}

/// Whether a request with this method announces an empty body
/// (`Content-Length: 0`) rather than none, as clients do.
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// How a response body is delimited.
#[derive(Debug)]
pub enum Framing {
    Empty,
    /// This many bytes to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the backend closes the connection.
    Close,
}

/// A response head read whole: interim (dropped), or final with its body's
/// framing and whether the backend keeps the connection.
#[derive(Debug)]
pub enum Parsed {
    Interim,
    Final(Response<()>, Framing, bool),
}

/// Parses a response head at the front of `buf` and consumes it; `None`
/// until it has come whole. Header values are slices of the read buffer,
/// not copies.
pub fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Parsed>, BackendError> {
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let config = httparse::ParserConfig::default();
    let length = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(BackendError::Malformed("too many header fields"));
        }
        Err(_) => return Err(BackendError::Malformed("unreadable response head")),
    };
    let (Some(code), Some(minor)) = (parsed.code, parsed.version) else {
        return Err(BackendError::Malformed("unreadable response head"));
    };
    // Where each name and value is, to slice them from the frozen head.
    let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
    let count = parsed.headers.len();
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        *span = (name, field.name.len(), value, field.value.len());
    }
    let head = buf.split_to(length).freeze();
    match code {
        101 => {
            return Err(BackendError::Malformed(
                "101 Switching Protocols to a request without Upgrade",
            ));
        }
        100..=199 => return Ok(Some(Parsed::Interim)),
        _ => {}
    }
    let mut headers = HeaderMap::with_capacity(count);
    for &(name, name_len, value, value_len) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[name..name + name_len])
            .map_err(|_| BackendError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
            .map_err(|_| BackendError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let status = StatusCode::from_u16(code).map_err(|_| BackendError::Malformed("invalid status code"))?;
    let (framing, framed) = framing(&headers, code, head_only)?;
    let keep = framed
        && match minor {
            1 => !connection_has(&headers, "close"),
            _ => connection_has(&headers, "keep-alive"),
        };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = headers;
    Ok(Some(Parsed::Final(response, framing, keep)))
}

/// The body's framing (RFC 9112 §6.3), and whether the connection can be
/// reused after it.
fn framing(headers: &HeaderMap, code: u16, head_only: bool) -> Result<(Framing, bool), BackendError> {
    if head_only || code == 204 || code == 304 {
        return Ok((Framing::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = list_items(headers, header::TRANSFER_ENCODING).last();
        let chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        // With a Content-Length too, the sender was confused: not reused.
        let framed = chunked && !headers.contains_key(header::CONTENT_LENGTH);
        return Ok(match chunked {
            true => (Framing::Chunked(Chunked::new()), framed),
            false => (Framing::Close, false),
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let n = parse_length(value.as_bytes()).ok_or(BackendError::Malformed("invalid Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(BackendError::Malformed("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// A response body read from its connection as it is polled.
#[derive(Debug)]
pub struct ResponseBody {
    /// `None` once the body failed: the connection is gone.
    conn: Option<H1Conn>,
    framing: Framing,
    /// Both sides meant to keep the connection, and the request went whole.
    keep: bool,
    ended: bool,
}

impl ResponseBody {
    fn new(conn: H1Conn, framing: Framing, keep: bool) -> Self {
        let ended = matches!(framing, Framing::Empty);
        ResponseBody {
            conn: Some(conn),
            framing,
            keep,
            ended,
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.ended || matches!(self.framing, Framing::Length(0))
    }

    /// The exact length still to come, when it is known.
    pub fn exact_len(&self) -> Option<u64> {
        match self.framing {
            _ if self.is_end_stream() => Some(0),
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The connection, once the body has been read to its end and the
    /// connection can carry another request.
    pub fn reusable(&mut self) -> Option<H1Conn> {
        let reusable =
            self.is_end_stream() && self.keep && self.conn.as_ref().is_some_and(|conn| conn.buf.is_empty());
        reusable.then(|| self.conn.take()).flatten()
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BackendError>>> {
        let polled = self.poll_data_inner(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn poll_data_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BackendError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let step = match &mut self.framing {
                Framing::Empty | Framing::Length(0) => Step::End,
                _ if conn.buf.is_empty() => Step::More,
                Framing::Length(left) => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.buf.len());
                    *left -= take as u64;
                    Step::Data(conn.buf.split_to(take).freeze())
                }
                Framing::Chunked(decoder) => match decoder.step(&mut conn.buf) {
                    Ok(step) => step,
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                },
                Framing::Close => Step::Data(conn.buf.split().freeze()),
            };
            match step {
                Step::Data(data) => return Poll::Ready(Some(Ok(data))),
                Step::End => return Poll::Ready(None),
                Step::More => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(self.framing, Framing::Close) => return Poll::Ready(None),
                Ok(0) => return Poll::Ready(Some(Err(BackendError::Truncated))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }
}

#[cfg(test)]
#[path = "h1_client_tests.rs"]
mod tests;
