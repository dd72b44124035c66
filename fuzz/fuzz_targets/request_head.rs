//! The request head scanner (`node/src/dataplane/l7/framing.rs`) against
//! hyper, the HTTP/1 server the proxy runs behind it, on one connection's
//! bytes. The input's first byte sets the read sizes; the rest is what the
//! client sent.
//!
//! The scanner extracts no method or target: it says where each head and
//! body ends, and request n is checked when the scanner has counted n
//! heads. So the check is that both split the stream alike:
//!
//! 1. The scanner's verdict does not depend on how the bytes are split into
//!    reads.
//! 2. For every request hyper hands the service, the head the scanner
//!    counted at that index (or stopped at as a conflict) is the same head:
//!    httparse reads the bytes the scanner delimited to the method, target,
//!    version and header fields hyper handed over.
//! 3. Body framing agrees: the body hyper reads is the one the head
//!    announces (Content-Length n, chunked, or none), and before a next
//!    head the scanner skipped exactly the n bytes a Content-Length
//!    announced (a chunked body is covered by 2 on the head after it).
//! 4. A head counted sound has not both Content-Length and
//!    Transfer-Encoding; the head of a conflict has both.
//! 5. Where hyper serves a request the scanner has not counted, the scanner
//!    must have stopped for one of the reasons it fails closed by design
//!    (the module doc of framing.rs): a Content-Length line longer than
//!    its 64-byte prefix, a chunk size whose digits run past that prefix, a
//!    trailer line ending in a bare LF (hyper reads it as part of the
//!    field), or a head with both names (hyper skips a Content-Length after
//!    a Transfer-Encoding, even an unreadable one; the proxy refuses the
//!    request either way).
//!
//! Where hyper refuses the bytes (its 400 ends the connection), the scanner
//! may read them as it likes: it is more lenient on purpose there (bare LF
//! in chunk lines, HTTP/1.0 with Transfer-Encoding, a chunk-data end other
//! than CRLF is `Lost`, not a new head).

#![no_main]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use libfuzzer_sys::fuzz_target;
use raftlb_config::HttpLimits;
use raftlb_fuzz::{Peer, Wire, run};
use raftlb_node::fuzzing::{HeadScanner, Stop};
use std::cell::RefCell;
use std::convert::Infallible;
use std::ops::Range;
use std::rc::Rc;

/// The scanner's line prefix (framing.rs `LINE_PREFIX`).
const LINE_PREFIX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&read_size, stream)) = data.split_first() else {
        return;
    };
    let scan = Scan::of(stream);
    for pieces in [stream.len().max(1), usize::from(read_size % 16) + 1] {
        let mut scanner = HeadScanner::default();
        stream.chunks(pieces).for_each(|piece| scanner.feed(piece));
        assert_eq!(verdict(&scanner), scan.verdict, "fed in pieces of {pieces}");
    }
    if scan.stop.is_some_and(|(stop, _)| stop == Stop::Http2) {
        return;
    }
    let read_size = match read_size >> 4 {
        0 => 1 + usize::from(read_size),
        _ => usize::MAX,
    };
    for (index, request) in serve(stream, read_size).iter().enumerate() {
        check(stream, &scan, index, request);
    }
});

/// Heads counted, the stop, and whether a head is arriving.
fn verdict(scanner: &HeadScanner) -> (u64, Option<Stop>, bool) {
    (scanner.heads(), scanner.stopped(), scanner.mid_head())
}

/// Where the scanner, fed one byte at a time, saw each head begin and end.
#[derive(Debug)]
struct Scan {
    /// Where each head began (its first byte, leading empty lines included).
    starts: Vec<usize>,
    /// Where each counted head ended (after its empty line).
    ends: Vec<usize>,
    /// The stop, and where it came (after the byte that made it).
    stop: Option<(Stop, usize)>,
    verdict: (u64, Option<Stop>, bool),
}

impl Scan {
    fn of(stream: &[u8]) -> Scan {
        let mut scanner = HeadScanner::default();
        let (mut starts, mut ends, mut stop) = (Vec::new(), Vec::new(), None);
        for (at, byte) in stream.iter().enumerate() {
            let (was_arriving, heads) = (scanner.mid_head(), scanner.heads());
            scanner.feed(std::slice::from_ref(byte));
            if !was_arriving && scanner.mid_head() {
                starts.push(at);
            }
            if scanner.heads() != heads {
                assert_eq!(scanner.heads(), heads + 1, "one byte ends one head at most");
                ends.push(at + 1);
            }
            if stop.is_none() {
                stop = scanner.stopped().map(|s| (s, at + 1));
            }
        }
        assert!(starts.len() == ends.len() || starts.len() == ends.len() + 1);
        assert_eq!(ends.len() as u64, scanner.heads());
        Scan {
            starts,
            ends,
            stop,
            verdict: verdict(&scanner),
        }
    }

    /// The bytes of head `index`, when the scanner counted it (`Ok`) or
    /// stopped at it as a conflict (`Err`).
    fn head(&self, index: usize) -> Option<Result<Range<usize>, Range<usize>>> {
        if let Some(&end) = self.ends.get(index) {
            return Some(Ok(self.starts[index]..end));
        }
        match self.stop {
            Some((Stop::Conflict, at)) if index == self.ends.len() => Some(Err(self.starts[index]..at)),
            _ => None,
        }
    }
}

/// A request as hyper handed it to the service.
#[derive(Debug)]
struct Served {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// The body's exact length as hyper announced it (`None`: chunked).
    exact: Option<u64>,
}

/// Serves `stream` with hyper, configured as the proxy's listeners are
/// (`dataplane/l7/server.rs`), and returns the requests it handed over.
fn serve(stream: &[u8], read_size: usize) -> Vec<Served> {
    let limits = HttpLimits::default();
    let served = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::clone(&served);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let log = Rc::clone(&log);
        async move {
            let (parts, body) = request.into_parts();
            log.borrow_mut().push(Served {
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
                exact: body.size_hint().exact(),
            });
            // Read to its end, as the proxy does, so hyper goes on to the
            // next request; a body hyper fails ends the connection.
            let _ = body.collect().await;
            // Not 2xx, so a CONNECT does not become a tunnel.
            let mut response = Response::new(Empty::<Bytes>::new());
            *response.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let wire = Wire::new(stream, read_size, Peer::Client);
    let dry_reads = wire.dry_reads();
    let _ = run(builder.serve_connection(wire, service), &dry_reads);
    served.take()
}

/// Checks request `index` as hyper served it against the scanner (see
/// the module doc).
fn check(stream: &[u8], scan: &Scan, index: usize, served: &Served) {
    let Some(head) = scan.head(index) else {
        assert!(
            fails_closed(stream, scan),
            "hyper served request {index} ({} {}), which the scanner neither checked nor stopped at \
             by design: {scan:?}",
            served.method,
            served.uri
        );
        return;
    };
    let (range, sound) = match head {
        Ok(range) => (range, true),
        Err(range) => (range, false),
    };
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut fields);
    let bytes = &stream[range.clone()];
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => {
            assert_eq!(
                length,
                bytes.len(),
                "head {index} at {range:?} is one head, whole"
            )
        }
        other => panic!("head {index} at {range:?} is not hyper's request {index}: {other:?}"),
    }
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        unreachable!("httparse completed")
    };
    assert_eq!(
        Method::from_bytes(method.as_bytes()).ok(),
        Some(served.method.clone())
    );
    assert_eq!(Uri::try_from(path).ok(), Some(served.uri.clone()));
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    assert_eq!(version, served.version);

    let named = |name: &'static str| {
        parsed
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    let chunked = named("transfer-encoding").next().is_some();
    let length = named("content-length").next();
    assert_eq!(
        sound,
        !(chunked && length.is_some()),
        "head {index}: conflict iff both names"
    );
    if !sound {
        return;
    }
    assert_eq!(
        fields_of(parsed.headers),
        fields_of_map(&served.headers),
        "head {index}'s fields"
    );

    let length = length.map(|h| digits(h.value).expect("hyper accepted the Content-Length"));
    let announced = if chunked { None } else { Some(length.unwrap_or(0)) };
    assert_eq!(served.exact, announced, "head {index}'s body framing");
    if let (Some(n), Some(&next)) = (announced, scan.starts.get(index + 1)) {
        assert_eq!(
            (next - range.end) as u64,
            n,
            "the scanner skipped head {index}'s body"
        );
    }
}

/// Header fields as hyper keeps them: names in lower case, each name's
/// values in order, names in order of first appearance; a Content-Length
/// only once (hyper keeps the first of equal ones).
fn fields_of(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut fields: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for header in headers {
        let name = header.name.to_ascii_lowercase();
        match fields.iter_mut().find(|(n, _)| *n == name) {
            Some(_) if name == "content-length" => {}
            Some((_, values)) => values.push(header.value.to_vec()),
            None => fields.push((name, vec![header.value.to_vec()])),
        }
    }
    fields
}

fn fields_of_map(headers: &HeaderMap) -> Vec<(String, Vec<Vec<u8>>)> {
    headers
        .keys()
        .map(|name| {
            let values = headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect();
            (name.as_str().to_string(), values)
        })
        .collect()
}

/// A Content-Length value as hyper reads it: digits only.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value
        .iter()
        .try_fold(0u64, |n, &b| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
}

/// Whether the scanner stopped following the stream for a reason it fails
/// closed on by design (point 5 of the module doc).
fn fails_closed(stream: &[u8], scan: &Scan) -> bool {
    let Some((Stop::Lost, at)) = scan.stop else {
        return false;
    };
    // Lines as the scanner counts them: up to the LF, a CR included.
    let lines = |range: Range<usize>| stream[range].split(|&b| b == b'\n').collect::<Vec<_>>();
    let named = |line: &[u8], name: &[u8]| {
        line.get(..name.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(name))
    };
    if scan.starts.len() > scan.ends.len() {
        // Lost at the end of a head.
        let head = lines(scan.starts[scan.ends.len()]..at);
        let long_length = head
            .iter()
            .any(|line| named(line, b"content-length:") && line.len() > LINE_PREFIX);
        let both = head.iter().any(|line| named(line, b"content-length:"))
            && head.iter().any(|line| named(line, b"transfer-encoding:"));
        return long_length || both;
    }
    // Lost in a chunked body: at a size line too long to read, or a line
    // ending in a bare LF (hyper serves on only if it was a trailer line).
    let line_start = stream[..at - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = &stream[line_start..at - 1];
    let long_size = line.len() > LINE_PREFIX && line[..LINE_PREFIX].iter().all(u8::is_ascii_hexdigit);
    long_size || line.last() != Some(&b'\r')
}
