//! The HTTP/1 server's request head parser
//! (`node/src/dataplane/l7/h1_server/head.rs`), on a client's bytes. The
//! input's first byte sets the read size; the rest is what the client sent.
//!
//! 1. No input panics it.
//! 2. The verdict does not depend on how the bytes come: fed a read at a
//!    time, the parser waits (`None`) until the read that completes the
//!    head (or shows it refused), then gives what it gives on all the
//!    bytes at once, and leaves the same bytes after the head.
//! 3. An accepted head's fields are httparse's, byte for byte (the parser
//!    shares the buffer's bytes by offset: a wrong offset shows here).
//! 4. An accepted head's framing is what its fields say, and never both
//!    `Content-Length` and `Transfer-Encoding`: `Length(n)` with every
//!    `Content-Length` item equal to n, `Chunked` with `chunked` last and
//!    alone among the codings, `None` otherwise.
//! 5. Where hyper's HTTP/1 server (which the proxy ran before) accepts the
//!    same head, method, target and version agree.

#![no_main]

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use libfuzzer_sys::fuzz_target;
use raftlb_fuzz::{Peer, Wire, run};
use raftlb_node::fuzzing::{BodyFraming, HeadLimits, parse_request_head};
use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 16 * 1024,
    max_headers: 100,
};

fuzz_target!(|data: &[u8]| {
    let Some((&read_size, stream)) = data.split_first() else {
        return;
    };
    let mut whole = BytesMut::from(stream);
    let at_once = parse_request_head(&mut whole, LIMITS);

    // 2: a read at a time.
    let mut buf = BytesMut::new();
    let mut verdict = None;
    for read in stream.chunks(usize::from(read_size).max(1)) {
        buf.extend_from_slice(read);
        match parse_request_head(&mut buf, LIMITS) {
            Ok(None) => continue,
            other => {
                verdict = Some(other);
                break;
            }
        }
    }
    match (&at_once, &verdict) {
        (Ok(None), None) => {}
        (Ok(Some(a)), Some(Ok(Some(b)))) => {
            assert_eq!(format!("{:?}", a.parts), format!("{:?}", b.parts));
            assert_eq!(a.body, b.body);
            assert_eq!(a.keep_alive, b.keep_alive);
            // What is left: the rest of the last read, then what followed.
            let consumed = stream.len() - whole.len();
            let tail = &stream[consumed..];
            assert!(tail.starts_with(&buf), "the same bytes are left after the head");
        }
        (Err(a), Some(Err(b))) => assert_eq!(a, b),
        (a, b) => panic!("at once: {a:?}; a read at a time: {b:?}"),
    }

    let Ok(Some(head)) = at_once else {
        return;
    };
    // 3: the fields are httparse's.
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(length)) = parsed.parse(stream) else {
        panic!("accepted a head httparse does not complete");
    };
    assert_eq!(length, stream.len() - whole.len());
    assert_eq!(head.parts.method.as_str(), parsed.method.unwrap());
    assert_eq!(head.parts.uri, parsed.path.unwrap());
    let fields: Vec<(String, &[u8])> = head
        .parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes()))
        .collect();
    let mut expected: Vec<(String, &[u8])> =
        parsed.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value)).collect();
    // HeaderMap groups a name's values, in order.
    let mut grouped: Vec<(String, &[u8])> = Vec::new();
    while !expected.is_empty() {
        let name = expected[0].0.clone();
        grouped.extend(expected.iter().filter(|(n, _)| *n == name).cloned());
        expected.retain(|(n, _)| *n != name);
    }
    assert_eq!(fields, grouped);

    // 4: framing.
    let lengths: Vec<u64> = head
        .parts
        .headers
        .get_all("content-length")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|item| std::str::from_utf8(item.trim_ascii()).unwrap().parse::<u64>().unwrap())
        .collect();
    let codings: Vec<&[u8]> = head
        .parts
        .headers
        .get_all("transfer-encoding")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    assert!(lengths.is_empty() || !head.parts.headers.contains_key("transfer-encoding"));
    match head.body {
        BodyFraming::Length(n) => assert!(n > 0 && lengths.iter().all(|&l| l == n)),
        BodyFraming::Chunked => {
            assert!(codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked"));
            assert_eq!(head.parts.version, Version::HTTP_11);
        }
        BodyFraming::None => {
            assert!(lengths.iter().all(|&l| l == 0));
            assert!(!head.parts.headers.contains_key("transfer-encoding"));
        }
    }

    // 5: hyper agrees where it accepts the head.
    if let Some(served) = hyper_head(&stream[..length]) {
        assert_eq!(served.0, head.parts.method);
        assert_eq!(served.1, head.parts.uri);
        assert_eq!(served.2, head.parts.version);
    }
});

/// The first request hyper's HTTP/1 server hands over for `head`, if it does.
fn hyper_head(head: &[u8]) -> Option<(Method, Uri, Version, HeaderMap)> {
    let served = Rc::new(RefCell::new(None));
    let log = Rc::clone(&served);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let log = Rc::clone(&log);
        async move {
            let (parts, _) = request.into_parts();
            log.borrow_mut()
                .get_or_insert((parts.method, parts.uri, parts.version, parts.headers));
            let mut response = Response::new(Empty::<Bytes>::new());
            *response.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(LIMITS.max_bytes)
        .max_headers(LIMITS.max_headers);
    let wire = Wire::new(head, usize::MAX, Peer::Client);
    let dry_reads = wire.dry_reads();
    let _ = run(builder.serve_connection(wire, service), &dry_reads);
    served.take()
}
