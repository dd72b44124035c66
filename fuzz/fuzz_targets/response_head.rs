//! The backend response parser (`node/src/dataplane/l7/h1_client.rs`:
//! `parse_head`, its body framing, and `final_response_began`) against
//! hyper's HTTP/1 client on the same bytes. The input's first byte says
//! whether the request was `HEAD` and how hyper's reads are sized; the rest
//! is what the backend sent.
//!
//! Checks: nothing panics; a head that `parse_head` reads whole is seen by
//! `final_response_began` as begun. Where both read a final response and
//! its whole body, they agree on the status, the header fields and the
//! body's bytes (so on its framing: empty, Content-Length, chunked, or to
//! the end of the connection).
//!
//! Where they may differ by design (compared only when both accept): the
//! node refuses a `101` (it never asks for an upgrade here) and a
//! Content-Length list such as `5, 5` (hyper's client takes equal values);
//! hyper refuses Transfer-Encoding in an HTTP/1.0 response, which the node
//! reads as chunked; the node's chunked decoder bounds size lines (4 KiB)
//! and refuses a bare LF in trailers, hyper bounds extensions and trailer
//! fields and parses the trailers. And the coding: hyper's client takes the
//! last element of the last Transfer-Encoding line, empty or not, and
//! knows no coding in a line that is not visible ASCII; the node reads the
//! bytes and skips empty list elements (RFC 9110 §5.6.1). So `chunked,` or
//! `x\xc0, chunked` is chunked to the node and no coding hyper knows, its
//! body running to the close; such responses are left out of the
//! comparison.

#![no_main]

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use libfuzzer_sys::fuzz_target;
use raftlb_fuzz::{Peer, Wire, run};
use raftlb_node::fuzzing::{Framing, Parsed, Step, final_response_began, parse_head};
use std::future::poll_fn;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let head_only = flags & 1 == 1;
    let read_size = match flags >> 1 {
        0..=31 => usize::from(flags >> 1) + 1,
        _ => usize::MAX,
    };
    let ours = node_reads(input, head_only);
    if let Some((status, headers, body)) = ours
        && !codings_read_differently(&headers)
        && let Some((h_status, h_headers, h_body)) = hyper_reads(input, head_only, read_size)
    {
        assert_eq!(status, h_status);
        assert_eq!(headers, h_headers);
        assert_eq!(body, h_body, "the body of a {status} response");
    }
});

/// The final response as the node's backend client reads it, with its
/// whole body; `None` if it refuses the bytes or they end too soon.
fn node_reads(input: &[u8], head_only: bool) -> Option<(StatusCode, HeaderMap, Vec<u8>)> {
    let _ = final_response_began(&mut BytesMut::from(input));
    let mut buf = BytesMut::from(input);
    let (response, framing) = loop {
        match parse_head(&mut buf, head_only) {
            Ok(Some(Parsed::Interim)) => continue,
            Ok(Some(Parsed::Final(response, framing, _keep))) => break (response, framing),
            Ok(None) | Err(_) => return None,
        }
    };
    assert!(
        final_response_began(&mut BytesMut::from(input)),
        "a final head that parses has begun"
    );
    let body = match framing {
        Framing::Empty => Vec::new(),
        Framing::Length(n) => buf.get(..usize::try_from(n).ok()?)?.to_vec(),
        Framing::Close => buf.to_vec(),
        Framing::Chunked(mut decoder) => {
            let mut body = Vec::new();
            loop {
                match decoder.step(&mut buf) {
                    Ok(Step::Data(data)) => body.extend_from_slice(&data),
                    Ok(Step::End) => break body,
                    Ok(Step::More) | Err(_) => return None,
                }
            }
        }
    };
    let (parts, ()) = response.into_parts();
    Some((parts.status, parts.headers, body))
}

/// The final response and its whole body as hyper's client reads them
/// after sending `GET /` (or `HEAD /`); `None` if hyper fails.
fn hyper_reads(input: &[u8], head_only: bool, read_size: usize) -> Option<(StatusCode, HeaderMap, Vec<u8>)> {
    let wire = Wire::new(input, read_size, Peer::Backend);
    let dry_reads = wire.dry_reads();
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(wire).await.ok()?;
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.method_mut() = if head_only { Method::HEAD } else { Method::GET };
        request
            .headers_mut()
            .insert(header::HOST, http::HeaderValue::from_static("backend"));
        let mut response = std::pin::pin!(async move {
            let response = sender.send_request(request).await.ok()?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.ok()?.to_bytes().to_vec();
            Some((parts.status, parts.headers, body))
        });
        let mut connection = std::pin::pin!(connection);
        let mut connected = true;
        poll_fn(|cx| {
            if connected && connection.as_mut().poll(cx).is_ready() {
                connected = false;
            }
            response.as_mut().poll(cx)
        })
        .await
    };
    run(exchange, &dry_reads).flatten()
}

/// Whether hyper's client reads the transfer coding differently from the
/// node by design (see the module doc): the last Transfer-Encoding line
/// ends in an empty list element, or is not visible ASCII.
fn codings_read_differently(headers: &HeaderMap) -> bool {
    let Some(last) = headers.get_all(header::TRANSFER_ENCODING).iter().next_back() else {
        return false;
    };
    let empty_last = last
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|coding| coding.trim_ascii().is_empty());
    empty_last || last.to_str().is_err()
}
