//! Request framing as the client sent it, for the one smuggling check
//! hyper's parser cannot give us: a request head carrying both
//! `Content-Length` and `Transfer-Encoding`. hyper (1.x, `role.rs`) drops
//! the `Content-Length` of such a request and closes the connection after
//! it, so the service never sees the conflict; RFC 9112 §6.3 lets a server
//! do that, but a proxy that forwards such a request hands a backend
//! behind another proxy a framing the two may read differently. raftlb
//! answers 400 instead, and no backend sees the request.
//!
//! [`HeadScanner`] follows an HTTP/1 connection's bytes as they are read
//! (before hyper sees them) just far enough to know where each request head
//! starts and ends: it splits heads into lines (memchr for `\n`) and looks
//! only at each header line's first bytes; it steps over a body of known
//! length by counting, and over a chunked body by reading only its
//! chunk-size lines. A head with both names is reported as a conflict
//! ([`Stop::Conflict`]); heads seen whole and sound are counted, so the
//! service can tell, for its n-th request, whether that head was checked.
//!
//! It agrees with hyper wherever hyper accepts the bytes (leading empty
//! lines skipped, bare `\n` line ends in heads, CRLF after chunk data), and
//! where hyper rejects them the connection ends with hyper's 400 anyway.
//! Where the scanner cannot follow (a `Content-Length` it cannot read, a
//! chunk size too long for its line buffer, a trailer line ending in a bare
//! `\n`, which hyper reads as part of the field) it stops with
//! [`Stop::Lost`] and every later request on the connection is refused:
//! unknown framing fails closed. An HTTP/2 preface stops it at once
//! ([`Stop::Http2`]), so HTTP/2 pays nothing after its first line; an
//! upgraded connection stops it when the `101` goes out (see
//! [`super::client_conn`]).

use http::header::{HeaderMap, TRANSFER_ENCODING};

/// How much of each line is kept: enough for the header names looked for
/// and any `Content-Length` value or chunk size worth reading.
const LINE_PREFIX: usize = 64;

/// Why the scanner stopped following the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The connection speaks HTTP/2 (prior knowledge preface).
    Http2,
    /// Head number [`HeadScanner::heads`] carries both `Content-Length`
    /// and `Transfer-Encoding`.
    Conflict,
    /// The framing could not be followed from head number
    /// [`HeadScanner::heads`] on.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head; `started` once any byte of it has come.
    Head {
        started: bool,
    },
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The line end after a chunk's data.
    ChunkEnd,
    Trailers,
    Stopped(Stop),
}

/// What one head said about its body.
#[derive(Debug, Default, Clone, Copy)]
struct Head {
    request_line: bool,
    length: Option<u64>,
    transfer_encoding: bool,
    /// A `Content-Length` that cannot be read, or two that differ.
    bad_length: bool,
}

/// Follows one HTTP/1 connection's request stream (see the module doc).
#[derive(Debug)]
pub struct HeadScanner {
    state: State,
    /// The current line's first bytes.
    line: [u8; LINE_PREFIX],
    /// The current line's length so far (may pass [`LINE_PREFIX`]).
    line_len: usize,
    /// The current line's last byte so far.
    line_last: u8,
    head: Head,
    heads: u64,
}

impl Default for HeadScanner {
    fn default() -> Self {
        HeadScanner {
            state: State::Head { started: false },
            line: [0; LINE_PREFIX],
            line_len: 0,
            line_last: 0,
            head: Head::default(),
            heads: 0,
        }
    }
}

impl HeadScanner {
    /// Heads seen whole and sound so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Whether part of a head (and not all of it) has been read.
    pub fn mid_head(&self) -> bool {
        self.state == State::Head { started: true }
    }

    pub fn stopped(&self) -> Option<Stop> {
        match self.state {
            State::Stopped(stop) => Some(stop),
            _ => None,
        }
    }

    /// Follows `data`, the next bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Stopped(_) => return,
                State::Length(left) | State::ChunkData(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    data = &data[take..];
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Head { started: false },
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                }
                State::Head { .. } | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    if self.state == (State::Head { started: false }) {
                        self.state = State::Head { started: true };
                    }
                    match memchr::memchr(b'\n', data) {
                        None => {
                            self.extend_line(data);
                            return;
                        }
                        Some(end) => {
                            self.extend_line(&data[..end]);
                            data = &data[end + 1..];
                            self.end_line();
                            self.line_len = 0;
                        }
                    }
                }
            }
        }
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.line_last = last;
        }
        if self.line_len < LINE_PREFIX {
            let take = bytes.len().min(LINE_PREFIX - self.line_len);
            self.line[self.line_len..self.line_len + take].copy_from_slice(&bytes[..take]);
        }
        self.line_len = self.line_len.saturating_add(bytes.len());
    }

    /// The current line without its `\r`, if it fits the prefix.
    fn whole_line(&self) -> Option<&[u8]> {
        let line = self.line.get(..self.line_len)?;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    fn is_empty_line(&self) -> bool {
        self.whole_line().is_some_and(<[u8]>::is_empty)
    }

    fn end_line(&mut self) {
        let empty = self.is_empty_line();
        match self.state {
            State::Head { .. } if empty => {
                // Empty lines before a request line are skipped (as hyper
                // does), though they count as the head having started.
                if self.head.request_line {
                    self.end_head();
                }
            }
            State::Head { .. } if !self.head.request_line => {
                self.head.request_line = true;
                if self.heads == 0 && self.whole_line() == Some(b"PRI * HTTP/2.0") {
                    self.state = State::Stopped(Stop::Http2);
                }
            }
            State::Head { .. } => self.header_line(),
            State::ChunkSize => self.chunk_size_line(),
            State::ChunkEnd if empty => self.state = State::ChunkSize,
            // hyper ends a trailer line only at CRLF: after a bare LF the
            // two would read the lines (and the end) differently.
            State::Trailers if self.line_len == 0 || self.line_last != b'\r' => {
                self.state = State::Stopped(Stop::Lost);
            }
            State::Trailers if empty => self.state = State::Head { started: false },
            State::Trailers => {}
            // Anything but CRLF after chunk data: hyper fails the body.
            _ => self.state = State::Stopped(Stop::Lost),
        }
    }

    fn header_line(&mut self) {
        let prefix = &self.line[..self.line_len.min(LINE_PREFIX)];
        if starts_with_ignore_case(prefix, b"transfer-encoding:") {
            self.head.transfer_encoding = true;
        } else if starts_with_ignore_case(prefix, b"content-length:") {
            let length = self
                .whole_line()
                .and_then(|line| parse_length(&line[b"content-length:".len()..]));
            match (length, self.head.length) {
                (Some(n), None) => self.head.length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => self.head.bad_length = true,
            }
        }
    }

    fn end_head(&mut self) {
        let head = std::mem::take(&mut self.head);
        self.state = if head.bad_length {
            State::Stopped(Stop::Lost)
        } else if head.transfer_encoding && head.length.is_some() {
            State::Stopped(Stop::Conflict)
        } else {
            self.heads += 1;
            match head.length {
                _ if head.transfer_encoding => State::ChunkSize,
                Some(n) if n > 0 => State::Length(n),
                _ => State::Head { started: false },
            }
        };
    }

    fn chunk_size_line(&mut self) {
        let prefix = &self.line[..self.line_len.min(LINE_PREFIX)];
        let digits = prefix.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        // A run of digits reaching past the prefix cannot be read whole.
        let readable = digits > 0 && (digits < prefix.len() || self.line_len <= LINE_PREFIX);
        let size = prefix[..digits].iter().try_fold(0u64, |size, &b| {
            let digit = char::from(b).to_digit(16)?;
            size.checked_mul(16)?.checked_add(u64::from(digit))
        });
        self.state = match size {
            Some(0) if readable => State::Trailers,
            Some(n) if readable => State::ChunkData(n),
            _ => State::Stopped(Stop::Lost),
        };
    }
}

/// A request's transfer codings, as hyper lets them through (it answers
/// 400 itself when `chunked` is not the last one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    None,
    Chunked,
    /// `chunked` more than once.
    Twice,
    /// A coding besides `chunked`, such as `gzip, chunked`: the proxy
    /// re-frames bodies, so it could not pass it on.
    Other,
}

pub fn transfer_coding(headers: &HeaderMap) -> Coding {
    let mut chunked = 0;
    let tokens = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty());
    for token in tokens {
        if !token.eq_ignore_ascii_case(b"chunked") {
            return Coding::Other;
        }
        chunked += 1;
    }
    match chunked {
        0 if headers.contains_key(TRANSFER_ENCODING) => Coding::Other,
        0 => Coding::None,
        1 => Coding::Chunked,
        _ => Coding::Twice,
    }
}

fn starts_with_ignore_case(line: &[u8], name: &[u8]) -> bool {
    line.get(..name.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(name))
}

/// A `Content-Length` value: digits between optional spaces or tabs.
pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
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

    /// Feeds `bytes` whole, then again one byte at a time; both must agree.
    fn scan(bytes: &[u8]) -> (u64, Option<Stop>, bool) {
        let mut whole = HeadScanner::default();
        whole.feed(bytes);
        let mut split = HeadScanner::default();
        for byte in bytes {
            split.feed(std::slice::from_ref(byte));
        }
        let result = (whole.heads(), whole.stopped(), whole.mid_head());
        assert_eq!(result, (split.heads(), split.stopped(), split.mid_head()));
        result
    }

    #[test]
    fn follows_requests_with_and_without_bodies() {
        let body = "x\r\nContent-Length: 5\r\n\r\n12345";
        let stream = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /a HTTP/1.1\r\ncontent-LENGTH:  {} \r\n\r\n{body}\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            1a;ext=1\r\n\r\nTransfer-Encoding: x\r\n\r\n\r\n0\r\nTrailer: t\r\n\r\n\
            \r\nGET /c HTTP/1.1\nHost: a\n\nGET /d",
            body.len()
        );
        assert_eq!(scan(stream.as_bytes()), (4, None, true));
    }

    #[test]
    fn both_lengths_in_one_head_is_a_conflict_in_either_order() {
        for head in [
            &b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
        ] {
            assert_eq!(scan(head), (1, Some(Stop::Conflict), false));
        }
    }

    #[test]
    fn names_inside_bodies_or_values_are_not_headers() {
        let stream = b"POST / HTTP/1.1\r\nX-Note: Content-Length: 3\r\nContent-Length: 40\r\n\r\n\
            \r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n123";
        assert_eq!(scan(stream), (1, None, false));
    }

    #[test]
    fn unreadable_framing_is_lost() {
        for stream in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4x\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        ] {
            assert_eq!(
                scan(stream).1,
                Some(Stop::Lost),
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
        let long_size = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{}1\r\n",
            "0".repeat(LINE_PREFIX)
        );
        assert_eq!(scan(long_size.as_bytes()).1, Some(Stop::Lost));
        // A long line that is not one the scanner reads is fine.
        let long_header = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(500));
        assert_eq!(scan(long_header.as_bytes()), (1, None, false));
    }

    #[test]
    fn a_trailer_line_ending_in_a_bare_lf_is_lost() {
        // Found by fuzz/request_head: hyper reads "\no" as one trailer field
        // and "E n" as the next request; the scanner read the bare LF as the
        // end of the trailers and counted "o" as the next head.
        let stream = b"O p HTTP/1.1\nTransfer-Encoding:chunked\n\n0\r\n\no\r\n\r\nE n HTTP/1.1\n\n";
        assert_eq!(scan(stream), (1, Some(Stop::Lost), false));
        let field = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\n\r\n\r\n";
        assert_eq!(scan(field), (1, Some(Stop::Lost), false));
        // CRLF trailer lines are followed, long ones too.
        let long = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: {}\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "a".repeat(100)
        );
        assert_eq!(scan(long.as_bytes()), (2, None, false));
    }

    #[test]
    fn the_http2_preface_stops_the_scan() {
        assert_eq!(
            scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04"),
            (0, Some(Stop::Http2), false)
        );
    }

    #[test]
    fn only_chunked_alone_is_a_transfer_coding_passed_on() {
        let coding = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(TRANSFER_ENCODING, http::HeaderValue::from_static(value));
            }
            transfer_coding(&headers)
        };
        assert_eq!(coding(&[]), Coding::None);
        assert_eq!(coding(&["Chunked"]), Coding::Chunked);
        assert_eq!(coding(&[" , chunked"]), Coding::Chunked);
        assert_eq!(coding(&["gzip, chunked"]), Coding::Other);
        assert_eq!(coding(&["gzip", "chunked"]), Coding::Other);
        assert_eq!(coding(&[""]), Coding::Other);
        assert_eq!(coding(&["chunked", "chunked"]), Coding::Twice);
    }

    #[test]
    fn leading_empty_lines_do_not_make_a_head() {
        assert_eq!(scan(b"\r\n\r\n\n"), (0, None, true));
        assert_eq!(scan(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"), (1, None, false));
    }
}
