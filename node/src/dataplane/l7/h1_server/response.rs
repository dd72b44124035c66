//! Responses written to an HTTP/1 client ([`Outbound`]): the head encoded
//! into one buffer with the body's first piece when it is already there,
//! so a small response is one write; the rest of the body as it comes,
//! with `Content-Length` when its size is known, else chunked (to HTTP/1.0
//! clients: delimited by the connection's close). Writes that make no
//! progress for the listener's `send_timeout` fail ([`SendClock`]) and are
//! counted as its refusals.

use crate::dataplane::admission::{ListenerGuard, Refusal};
use crate::dataplane::l7::body::ProxyBody;
use crate::dataplane::l7::send_clock::SendClock;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::Body;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWrite;

/// The write half of a client connection.
pub type WriteIo = Pin<Box<dyn AsyncWrite + Send>>;

/// A first body piece up to this size is copied behind the head, so both
/// go in one write.
const COPY_BEHIND_HEAD: usize = 16 * 1024;

/// What the client asked that shapes the response's framing.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub head: bool,
    pub version: Version,
}

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, `1xx`, `204`, `304`).
    None,
    Length(u64),
    Chunked,
    /// To the connection's end.
    Close,
}

/// The client's write side.
pub struct Outbound {
    io: WriteIo,
    clock: SendClock,
    guard: Arc<ListenerGuard>,
    /// TLS: a close sends close_notify first.
    tls: bool,
}

impl Outbound {
    pub fn new(io: WriteIo, send_timeout: Duration, guard: Arc<ListenerGuard>, tls: bool) -> Self {
        Outbound {
            io,
            clock: SendClock::new(send_timeout),
            guard,
            tls,
        }
    }

    /// Before the connection is dropped: TLS sends its close_notify (for
    /// a second at most); plain TCP needs nothing, its FIN goes with the
    /// socket's close (one system call fewer than a shutdown first).
    pub async fn close(&mut self) {
        if self.tls {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.shutdown()).await;
        }
    }

    /// The write half, for an upgrade's tunnel.
    pub fn into_inner(self) -> WriteIo {
        self.io
    }

    /// Writes all of `slices`, under the send timeout.
    pub async fn write_all(&mut self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        // Empty slices in front are dropped (and after each write).
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            let n = poll_fn(|cx| {
                let polled = self.io.as_mut().poll_write_vectored(cx, slices);
                self.followed(cx, polled)
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| {
            let polled = self.io.as_mut().poll_flush(cx);
            self.followed(cx, polled)
        })
        .await
    }

    /// Closes the write side (TLS: its close_notify), under the send timeout.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        poll_fn(|cx| {
            let polled = self.io.as_mut().poll_shutdown(cx);
            self.followed(cx, polled)
        })
        .await
    }

    fn followed<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let expired = self.clock.expired();
        let followed = self.clock.follow(cx, polled);
        if self.clock.expired() && !expired {
            self.guard.count(Refusal::SendTimeout);
        }
        followed
    }

    /// Writes `response` (`keep_alive`: the connection carries another
    /// request after it). Returns the body bytes written, and whether the
    /// connection can carry another request (a body of unknown length to
    /// an HTTP/1.0 client ends with the connection).
    pub async fn send(
        &mut self,
        response: Response<ProxyBody>,
        asked: Asked,
        keep_alive: bool,
    ) -> (io::Result<bool>, u64) {
        let (mut parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodiless = asked.head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let exact = body.size_hint().exact();
        let framing = match exact {
            _ if bodiless => Framing::None,
            Some(n) => Framing::Length(n),
            None if asked.version == Version::HTTP_11 => Framing::Chunked,
            None => Framing::Close,
        };
        let keep_alive = keep_alive && framing != Framing::Close;
        match framing {
            Framing::Length(n) => {
                parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            Framing::None => {
                if let (true, Some(n), false) = (
                    asked.head,
                    exact,
                    parts.headers.contains_key(header::CONTENT_LENGTH),
                ) {
                    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                }
            }
            Framing::Chunked | Framing::Close => {
                parts.headers.remove(header::CONTENT_LENGTH);
            }
        }
        let mut out = Vec::with_capacity(512);
        encode_head(&mut out, &parts, framing, keep_alive, asked.version);
        if framing == Framing::None {
            return (
                self.finish(&mut [IoSlice::new(&out)]).await.map(|()| keep_alive),
                0,
            );
        }
        let mut sent = 0u64;
        let result = self.send_body(&mut out, &mut body, framing, &mut sent).await;
        (result.map(|()| keep_alive), sent)
    }

    /// The body after the head in `out` (not written yet).
    async fn send_body(
        &mut self,
        out: &mut Vec<u8>,
        body: &mut ProxyBody,
        framing: Framing,
        sent: &mut u64,
    ) -> io::Result<()> {
        let mut head = Some(std::mem::take(out));
        let announced = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        loop {
            // The head waits for a piece already there; else it goes alone.
            let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
            let frame = match polled {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if let Some(head) = head.take() {
                        self.write_all(&mut [IoSlice::new(&head)]).await?;
                    }
                    self.flush().await?;
                    poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    // Trailers are not passed on; empty pieces say nothing.
                    _ => continue,
                },
            };
            *sent += data.len() as u64;
            if announced.is_some_and(|n| *sent > n) {
                return Err(io::Error::other("the body is longer than its Content-Length"));
            }
            self.write_piece(head.take(), &data, framing).await?;
        }
        if announced.is_some_and(|n| *sent != n) {
            return Err(io::Error::other("the body ended before its Content-Length"));
        }
        let end: &[u8] = match framing {
            Framing::Chunked => b"0\r\n\r\n",
            _ => b"",
        };
        match head {
            Some(mut head) => {
                head.extend_from_slice(end);
                self.finish(&mut [IoSlice::new(&head)]).await
            }
            None => self.finish(&mut [IoSlice::new(end)]).await,
        }
    }

    /// Writes one piece of the body (behind `head`, if it has not gone yet).
    async fn write_piece(&mut self, head: Option<Vec<u8>>, data: &Bytes, framing: Framing) -> io::Result<()> {
        let mut size_line = [0u8; 20];
        let size_line: &[u8] = match framing {
            Framing::Chunked => {
                use std::io::Write as _;
                let mut cursor = io::Cursor::new(&mut size_line[..]);
                let _ = write!(cursor, "{:x}\r\n", data.len());
                let n = cursor.position() as usize;
                &size_line[..n]
            }
            _ => b"",
        };
        let crlf: &[u8] = match framing {
            Framing::Chunked => b"\r\n",
            _ => b"",
        };
        match head {
            Some(mut head) if data.len() <= COPY_BEHIND_HEAD => {
                head.extend_from_slice(size_line);
                head.extend_from_slice(data);
                head.extend_from_slice(crlf);
                self.write_all(&mut [IoSlice::new(&head)]).await
            }
            head => {
                let head = head.unwrap_or_default();
                let mut slices = [
                    IoSlice::new(&head),
                    IoSlice::new(size_line),
                    IoSlice::new(data),
                    IoSlice::new(crlf),
                ];
                self.write_all(&mut slices).await
            }
        }
    }

    async fn finish(&mut self, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        self.write_all(slices).await?;
        self.flush().await
    }
}

/// The status line and fields, the framing's and `Connection`'s added.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Framing,
    keep_alive: bool,
    version: Version,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|date| out.extend_from_slice(date.now()));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Date` value, formatted once a second per thread.
struct CachedDate {
    second: u64,
    text: String,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: 0, text: String::new() }) };
}

/// A local answer with `Connection: close`, for a head refused before any
/// request was made of it.
pub fn refusal(status: StatusCode, text: &'static str) -> Vec<u8> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    let (parts, ()) = response.into_parts();
    let mut out = Vec::with_capacity(256);
    encode_head(&mut out, &parts, Framing::None, false, Version::HTTP_11);
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn sent(response: Response<ProxyBody>, asked: Asked, keep_alive: bool) -> (String, bool) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut outbound = Outbound::new(Box::pin(server), Duration::from_secs(5), Arc::default(), false);
        let (result, _) = outbound.send(response, asked, keep_alive).await;
        drop(outbound);
        let mut text = String::new();
        client.read_to_string(&mut text).await.expect("read");
        (text, result.expect("sent"))
    }

    const GET_11: Asked = Asked {
        head: false,
        version: Version::HTTP_11,
    };

    #[tokio::test]
    async fn a_body_of_known_size_gets_its_length_and_a_date() {
        let (text, keep) = sent(Response::new(ProxyBody::local("hello")), GET_11, true).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(!text.contains("connection"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");
        assert!(keep);
    }

    #[tokio::test]
    async fn a_head_request_gets_the_length_and_no_body() {
        let asked = Asked { head: true, ..GET_11 };
        let (text, _) = sent(Response::new(ProxyBody::local("hello")), asked, false).await;
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn a_refusal_closes_the_connection() {
        let text = String::from_utf8(refusal(StatusCode::BAD_REQUEST, "bad\n")).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nbad\n"), "{text}");
    }
}
