//! The chunked transfer coding of a backend's response body (RFC 9112
//! §7.1), decoded in place: [`Chunked::step`] takes what it can from the
//! bytes read so far and hands data out as slices of them, without a copy.
//! Chunk extensions are skipped and trailer fields read and dropped (the
//! client side re-frames the body). Size lines and trailers are bounded, so
//! a backend cannot make the proxy buffer without end.

use bytes::{Bytes, BytesMut};

/// Longest chunk-size line (size, extensions and line end).
const MAX_SIZE_LINE: usize = 4096;
/// Most trailer bytes read (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data: this many bytes to come.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines, this many bytes of them so far.
    Trailers(usize),
    Done,
}

/// What one step found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body ended (its last byte consumed).
    End,
}

/// A body that does not follow the coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct Malformed(pub &'static str);

impl Chunked {
    pub fn new() -> Self {
        Chunked::Size
    }

    /// Decodes from the front of `buf`, consuming what it uses.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(end) = line_end(buf, MAX_SIZE_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&buf[..end])?;
                    let _ = buf.split_to(end + 2);
                    *self = match size {
                        0 => Chunked::Trailers(0),
                        n => Chunked::Data(n),
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    *self = match left - take as u64 {
                        0 => Chunked::DataEnd,
                        n => Chunked::Data(n),
                    };
                    return Ok(Step::Data(buf.split_to(take).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let Some(end) = line_end(buf, MAX_TRAILERS - seen)? else {
                        return Ok(Step::More);
                    };
                    let _ = buf.split_to(end + 2);
                    *self = match end {
                        0 => Chunked::Done,
                        _ => Chunked::Trailers(seen + end + 2),
                    };
                }
                Chunked::Done => return Ok(Step::End),
            }
        }
    }
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

/// Where the CRLF ending the first line of `buf` starts, if it has come;
/// an error if the line passes `limit` bytes or ends in a bare LF.
fn line_end(buf: &[u8], limit: usize) -> Result<Option<usize>, Malformed> {
    match memchr::memchr(b'\n', &buf[..buf.len().min(limit)]) {
        Some(0) => Err(Malformed("bare LF")),
        Some(lf) if buf[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err(Malformed("bare LF")),
        None if buf.len() >= limit => Err(Malformed("line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (without its CRLF): hex digits, then
/// optional whitespace and `;` extensions, which are skipped.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Malformed("no chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(Malformed("junk after the chunk size"));
    }
    line[..digits].iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(16).unwrap_or(0);
        n.checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(digit)))
            .ok_or(Malformed("chunk size overflows"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; the data and whether it ended.
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, bool), Malformed> {
        let mut decoder = Chunked::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in input.chunks(piece.max(1)) {
            buf.extend_from_slice(part);
            loop {
                match decoder.step(&mut buf)? {
                    Step::Data(data) => out.extend_from_slice(&data),
                    Step::More => break,
                    Step::End => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunks_decode_whole_and_byte_by_byte() {
        let body = b"5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for piece in [1, 2, 3, 7, body.len()] {
            let (data, ended) = decode(body, piece).unwrap();
            assert_eq!(data, b"hello, world", "pieces of {piece}");
            assert!(ended, "pieces of {piece}");
        }
    }

    #[test]
    fn bytes_after_the_end_are_left_in_the_buffer() {
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\n\r\nHTTP/1.1"[..]);
        let mut decoder = Chunked::new();
        assert_eq!(decoder.step(&mut buf), Ok(Step::Data(Bytes::from_static(b"a"))));
        assert_eq!(decoder.step(&mut buf), Ok(Step::End));
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn an_unfinished_body_has_not_ended() {
        let (data, ended) = decode(b"3\r\nabc\r\n", 4).unwrap();
        assert_eq!(data, b"abc");
        assert!(!ended);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello",
            b"3\r\nabcX\r\n",
            b"3 junk\r\nabc\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\nTrailer\n\r\n",
        ] {
            assert!(
                decode(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_line = [b"1;".as_slice(), &[b'x'; MAX_SIZE_LINE]].concat();
        assert_eq!(decode(&long_line, 512), Err(Malformed("line too long")));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 64 {
            trailers.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(decode(&trailers, 100), Err(Malformed("line too long")));
    }
}
