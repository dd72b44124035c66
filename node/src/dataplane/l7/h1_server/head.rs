//! A client's HTTP/1.x request head (RFC 9112), read from the front of the
//! connection's buffer: httparse splits the request line and the fields,
//! and this module makes them an [`http::request::Parts`] that shares the
//! buffer's bytes (no copy of the target or of any value) and decides the
//! body's framing. What a proxy must not pass on is refused here, before a
//! backend is chosen:
//!
//! - a head past the listener's `max_header_bytes`, or with more fields
//!   than its `max_headers`: 431;
//! - malformed syntax (httparse's verdict, obsolete line folding included),
//!   a target or value the `http` types refuse: 400; a target too long for
//!   them: 414; a version other than 1.0 and 1.1: 505;
//! - request smuggling (RFC 9112 §6.3, §11.2): `Content-Length` beside
//!   `Transfer-Encoding`, `Content-Length` values that disagree or are not
//!   digits, `Transfer-Encoding` in HTTP/1.0, a last coding other than
//!   `chunked`, `chunked` twice: 400; a coding besides `chunked` (which
//!   could not be passed on, bodies being re-framed): 501;
//! - `CONNECT`: 405 (a reverse proxy opens no tunnels on request).

use crate::dataplane::l7::headers::{connection_has, list_items};
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use raftlb_config::limits::MAX_HEADERS;
use std::mem::MaybeUninit;

/// The longest request target the `http` crate takes.
const MAX_TARGET: usize = u16::MAX as usize - 1;
/// Header fields the proxy adds to a request on its way (`X-Request-Id`,
/// `X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`).
const ADDED_FIELDS: usize = 4;

/// The listener's limits on a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line and fields, line ends included.
    pub max_bytes: usize,
    pub max_headers: usize,
}

/// A request head read whole.
#[derive(Debug)]
pub struct Head {
    pub parts: http::request::Parts,
    pub body: BodyFraming,
    /// The client means to send another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a request with a body.
    pub expects_continue: bool,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Why a head is refused; the connection closes after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    #[error("request head larger than max_header_bytes")]
    TooLarge,
    #[error("more header fields than max_headers")]
    TooManyHeaders,
    #[error("request target too long")]
    TargetTooLong,
    #[error("HTTP version not supported")]
    Version,
    #[error("Content-Length and Transfer-Encoding together")]
    Conflict,
    #[error("chunked applied more than once")]
    ChunkedTwice,
    #[error("a transfer coding besides chunked")]
    OtherCoding,
    #[error("CONNECT is not served")]
    Connect,
}

impl Refused {
    pub fn status(self) -> StatusCode {
        match self {
            Refused::TooLarge | Refused::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refused::TargetTooLong => StatusCode::URI_TOO_LONG,
            Refused::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Refused::OtherCoding => StatusCode::NOT_IMPLEMENTED,
            Refused::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Refused::Malformed(_) | Refused::Conflict | Refused::ChunkedTwice => StatusCode::BAD_REQUEST,
        }
    }

    /// The answer's body.
    pub fn text(self) -> &'static str {
        match self {
            Refused::Malformed(_) => "malformed request\n",
            Refused::TooLarge | Refused::TooManyHeaders => "request head too large\n",
            Refused::TargetTooLong => "request target too long\n",
            Refused::Version => "HTTP version not supported\n",
            Refused::Conflict => "Content-Length and Transfer-Encoding together\n",
            Refused::ChunkedTwice => "chunked applied more than once\n",
            Refused::OtherCoding => "only the chunked transfer coding is supported\n",
            Refused::Connect => "CONNECT is not served\n",
        }
    }
}

/// Reads the head at the front of `buf`, taking its bytes out: `Ok(None)`
/// while it is incomplete (and within the limits).
pub fn parse(buf: &mut BytesMut, limits: HeadLimits) -> Result<Option<Head>, Refused> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let slots = &mut slots[..limits.max_headers.clamp(1, MAX_HEADERS)];
    // Only the first `max_bytes` are looked at, so the verdict does not
    // depend on how much came past them.
    let window = &buf[..buf.len().min(limits.max_bytes)];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => return Err(Refused::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(Refused::Version),
        Err(e) => return Err(Refused::Malformed(malformed(e))),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version) else {
        return Err(Refused::Malformed("incomplete request line"));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Refused::Malformed("method"))?;
    if method == Method::CONNECT {
        return Err(Refused::Connect);
    }
    let version = match minor {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Offsets into the head, so its fields can share its bytes once it is
    // split off the buffer.
    let base = window.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = span(target.as_bytes());
    // The names are made while `buf` is borrowed; the values, once the
    // head is split off it.
    let mut fields = Vec::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Refused::Malformed("field name"))?;
        fields.push((name, span(field.value)));
    }
    let head = buf.split_to(length).freeze();
    let slice = |(at, len): (usize, usize)| head.slice(at..at + len);
    // Room for what the proxy adds (`X-Request-Id`, the forwarding
    // headers), so the map does not grow on the way to the backend.
    let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_FIELDS);
    for (name, value) in fields {
        let value =
            HeaderValue::from_maybe_shared(slice(value)).map_err(|_| Refused::Malformed("field value"))?;
        headers.append(name, value);
    }
    let uri = match Uri::from_maybe_shared(slice(target)) {
        Ok(uri) => uri,
        Err(_) if target.1 > MAX_TARGET => return Err(Refused::TargetTooLong),
        Err(_) => return Err(Refused::Malformed("request target")),
    };
    let body = framing(&headers, version)?;
    let keep_alive = match version {
        Version::HTTP_10 => connection_has(&headers, "keep-alive"),
        _ => !connection_has(&headers, "close"),
    };
    let expects_continue = version == Version::HTTP_11
        && body != BodyFraming::None
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        body,
        keep_alive,
        expects_continue,
    }))
}

fn malformed(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "field name",
        httparse::Error::HeaderValue => "field value",
        httparse::Error::NewLine => "line end",
        httparse::Error::Status | httparse::Error::Token => "request line",
        _ => "syntax",
    }
}

/// The body's framing from the head's fields (see the module doc).
fn framing(headers: &HeaderMap, version: Version) -> Result<BodyFraming, Refused> {
    let length = content_length(headers)?;
    match transfer_coding(headers) {
        Coding::None => Ok(match length {
            None | Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }),
        _ if version == Version::HTTP_10 => Err(Refused::Malformed("Transfer-Encoding in HTTP/1.0")),
        _ if length.is_some() || headers.contains_key(header::CONTENT_LENGTH) => Err(Refused::Conflict),
        Coding::Chunked => Ok(BodyFraming::Chunked),
        Coding::Twice => Err(Refused::ChunkedTwice),
        Coding::Other => Err(Refused::OtherCoding),
        Coding::NotChunkedLast => Err(Refused::Malformed("the last transfer coding is not chunked")),
    }
}

/// The `Content-Length`, when every value (and every item of a list)
/// agrees; an error when they do not or one is not digits.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Refused> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(item).ok_or(Refused::Malformed("Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refused::Malformed("Content-Length values disagree"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// A request's transfer codings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    None,
    Chunked,
    /// `chunked` more than once.
    Twice,
    /// `chunked` last, with another coding before it.
    Other,
    /// Something other than `chunked` last: the body's end is unknown.
    NotChunkedLast,
}

fn transfer_coding(headers: &HeaderMap) -> Coding {
    let (mut chunked, mut other, mut last_chunked) = (0, false, false);
    for token in list_items(headers, header::TRANSFER_ENCODING) {
        last_chunked = token.eq_ignore_ascii_case(b"chunked");
        match last_chunked {
            true => chunked += 1,
            false => other = true,
        }
    }
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        Coding::None
    } else if !last_chunked {
        Coding::NotChunkedLast
    } else if chunked > 1 {
        Coding::Twice
    } else if other {
        Coding::Other
    } else {
        Coding::Chunked
    }
}

/// A `Content-Length` value: digits between optional spaces or tabs.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value
        .iter()
        .try_fold(0u64, |n, &b| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Parses `bytes`; returns what is left of them too.
    fn parse_bytes(bytes: &[u8], limits: HeadLimits) -> (Result<Option<Head>, Refused>, Bytes) {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse(&mut buf, limits);
        (parsed, buf.freeze())
    }

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 16 * 1024,
        max_headers: 100,
    };

    fn head(bytes: &[u8]) -> Result<Option<Head>, Refused> {
        parse_bytes(bytes, LIMITS).0
    }

    #[test]
    fn a_simple_head_is_read_and_taken_out_of_the_buffer() {
        let (parsed, rest) = parse_bytes(
            b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\nNEXT",
            LIMITS,
        );
        let head = parsed.expect("sound").expect("whole");
        assert_eq!(head.parts.method, Method::GET);
        assert_eq!(head.parts.uri, "/a?b");
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.parts.headers["host"], "x");
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(head.body, BodyFraming::None);
        assert!(head.keep_alive);
        assert_eq!(&rest[..], b"NEXT");
    }

    #[test]
    fn an_incomplete_head_waits_and_leaves_the_buffer_alone() {
        let (parsed, rest) = parse_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n", LIMITS);
        assert!(parsed.expect("sound so far").is_none());
        assert_eq!(rest.len(), 25);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let keep = |bytes: &[u8]| head(bytes).unwrap().unwrap().keep_alive;
        assert!(!keep(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn body_framing_is_read_from_the_fields() {
        let body = |bytes: &[u8]| head(bytes).map(|h| h.unwrap().body);
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(BodyFraming::Chunked)
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let refused = |bytes: &[u8]| head(bytes).map(|_| ()).unwrap_err();
        let cases: [(&[u8], Refused); 8] = [
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refused::Conflict,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
                Refused::Malformed("Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\n",
                Refused::Malformed("Content-Length values disagree"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
                Refused::Malformed("Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Refused::OtherCoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                Refused::Malformed("the last transfer coding is not chunked"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refused::ChunkedTwice,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refused::Malformed("Transfer-Encoding in HTTP/1.0"),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(refused(bytes), expected, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn limits_and_syntax_get_their_statuses() {
        let status = |bytes: &[u8]| head(bytes).map(|_| ()).unwrap_err().status();
        assert_eq!(status(b"GARBAGE\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(b"GET / HTTP/2.0\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
        assert_eq!(
            status(b"CONNECT x:443 HTTP/1.1\r\n\r\n"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(16 * 1024));
        assert_eq!(
            status(big.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn continue_is_expected_only_with_a_body() {
        let expects = |bytes: &[u8]| head(bytes).unwrap().unwrap().expects_continue;
        assert!(expects(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        ));
        assert!(!expects(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"));
    }
}
