//! The chunked decoder of backend response bodies
//! (`node/src/dataplane/l7/chunked.rs`). The input's first four bytes set
//! how the body is split into reads; the rest is the body.
//!
//! Checks: nothing panics; the data, the end and the error do not depend on
//! how the bytes arrive (whole, byte by byte, or in the input's pieces);
//! at its end the decoder has consumed the body and not a byte more; the
//! data is never longer than the body. And, differentially against
//! httparse's `parse_chunk_size`: every chunk-size line the decoder meets,
//! when both accept it, has the same size and the same length. (The decoder
//! is stricter by design: it refuses an empty size, which httparse reads
//! as 0, and a bare LF inside an extension; httparse refuses sizes of more
//! than 16 digits and whitespace other than SP and HTAB.)

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use raftlb_node::fuzzing::{Chunked, Malformed, Step};

fuzz_target!(|data: &[u8]| {
    let Some((sizes, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let whole = decode(body, &[body.len().max(1)]);
    let bytewise = decode(body, &[1]);
    let sizes = sizes.map(|s| usize::from(s % 32) + 1);
    let pieces = decode(body, &sizes);
    assert_eq!(bytewise.outcome, whole.outcome, "read byte by byte");
    assert_eq!(pieces.outcome, whole.outcome, "read in pieces of {sizes:?}");
    for &at in &bytewise.size_lines {
        compare_size_line(&body[at..]);
    }
});

/// What decoding a body found.
#[derive(Debug)]
struct Decoded {
    /// The data, and how many bytes of the body the decoder consumed once
    /// it ended (`None`: not ended), or why it refused the body.
    outcome: Result<(Vec<u8>, Option<usize>), Malformed>,
    /// Where each chunk-size line began.
    size_lines: Vec<usize>,
}

/// Decodes `body`, read in pieces of the sizes in `pieces` (cycled), as
/// the backend client does.
fn decode(body: &[u8], pieces: &[usize]) -> Decoded {
    let mut decoder = Chunked::new();
    let mut buf = BytesMut::new();
    let (mut data, mut fed, mut size_lines) = (Vec::new(), 0, Vec::new());
    for &piece in pieces.iter().cycle() {
        if fed == body.len() {
            break;
        }
        if decoder == Chunked::Size && buf.is_empty() {
            size_lines.push(fed);
        }
        let next = (fed + piece).min(body.len());
        buf.extend_from_slice(&body[fed..next]);
        fed = next;
        loop {
            match decoder.step(&mut buf) {
                Ok(Step::Data(bytes)) => {
                    assert!(!bytes.is_empty(), "no empty data steps");
                    data.extend_from_slice(&bytes);
                }
                Ok(Step::More) => break,
                Ok(Step::End) => {
                    let consumed = fed - buf.len();
                    assert_eq!(
                        &buf[..],
                        &body[consumed..fed],
                        "the bytes after the body are left"
                    );
                    assert!(data.len() < consumed);
                    return Decoded {
                        outcome: Ok((data, Some(consumed))),
                        size_lines,
                    };
                }
                Err(e) => {
                    return Decoded {
                        outcome: Err(e),
                        size_lines,
                    };
                }
            }
        }
    }
    assert!(data.len() <= body.len());
    Decoded {
        outcome: Ok((data, None)),
        size_lines,
    }
}

/// A chunk-size line at the front of `rest`, read by the decoder and by
/// httparse: where both accept it, they agree on its size and length.
fn compare_size_line(rest: &[u8]) {
    let Ok(httparse::Status::Complete((length, size))) = httparse::parse_chunk_size(rest) else {
        return;
    };
    let mut decoder = Chunked::new();
    let mut line = BytesMut::from(&rest[..length]);
    let Ok(step) = decoder.step(&mut line) else {
        return;
    };
    assert_eq!(step, Step::More, "a size line alone gives no data");
    assert!(line.is_empty(), "the decoder took the whole line httparse read");
    let expected = match size {
        0 => Chunked::Trailers(0),
        n => Chunked::Data(n),
    };
    assert_eq!(decoder, expected);
}
