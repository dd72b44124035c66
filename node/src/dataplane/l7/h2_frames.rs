//! Follows an HTTP/2 client's bytes just far enough to time its request
//! heads, as [`framing`](super::framing) does for HTTP/1: after the
//! 24-byte connection preface, each frame's 9-byte header gives its length
//! and type, and a header block runs from a HEADERS (or PUSH_PROMISE) frame
//! to the end of the frame flagged END_HEADERS. Payloads are stepped over,
//! never read; hyper's HTTP/2 server checks everything else.

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

#[derive(Debug, Clone)]
pub struct FrameFollower {
    /// Bytes of the preface still to come.
    preface_left: usize,
    /// The current frame's header, as far as it has come.
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Bytes of the current frame's payload still to come.
    payload_left: usize,
    /// The current frame carries part of a header block.
    block_frame: bool,
    /// A header block's END_HEADERS frame has not begun yet.
    block_open: bool,
    /// Heads (preface, header block, lone frame header) seen mid-way and
    /// then completed: a head still arriving after one completed in the
    /// same read began anew.
    finished: u64,
}

impl FrameFollower {
    /// Follows a connection whose first `read` bytes (less than the
    /// preface) have gone by already.
    pub fn after(read: u64) -> Self {
        let read = usize::try_from(read).unwrap_or(PREFACE_LEN).min(PREFACE_LEN);
        FrameFollower {
            preface_left: PREFACE_LEN - read,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            block_frame: false,
            block_open: false,
            finished: 0,
        }
    }

    /// Part of a head has come and not all of it: the preface, a frame's
    /// 9-byte header (it may start a header block) or a header block.
    pub fn mid_head(&self) -> bool {
        self.preface_left > 0
            || self.header_len > 0
            || self.block_open
            || (self.block_frame && self.payload_left > 0)
    }

    /// Heads completed after being seen mid-way, so far.
    pub fn finished(&self) -> u64 {
        self.finished
    }

    /// Follows `data`, the next bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let was_mid = self.mid_head();
            if self.preface_left > 0 {
                let take = self.preface_left.min(data.len());
                self.preface_left -= take;
                data = &data[take..];
            } else if self.payload_left > 0 {
                let take = self.payload_left.min(data.len());
                self.payload_left -= take;
                data = &data[take..];
            } else {
                let take = (FRAME_HEADER_LEN - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len == FRAME_HEADER_LEN {
                    self.frame_begins();
                }
            }
            if was_mid && !self.mid_head() {
                self.finished += 1;
            }
        }
    }

    /// A whole frame header has come: what its payload is part of.
    fn frame_begins(&mut self) {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        self.header_len = 0;
        self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        self.block_frame = matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION);
        if self.block_frame {
            self.block_open = flags & END_HEADERS == 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload_len: usize) -> Vec<u8> {
        let len = payload_len as u32;
        let mut out = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        out.resize(FRAME_HEADER_LEN + payload_len, b'x');
        out
    }

    /// Feeds `bytes` one at a time; returns after how many bytes the
    /// follower was mid-head.
    fn mid_after_each(follower: &mut FrameFollower, bytes: &[u8]) -> Vec<bool> {
        bytes
            .iter()
            .map(|b| {
                follower.feed(std::slice::from_ref(b));
                follower.mid_head()
            })
            .collect()
    }

    #[test]
    fn the_preface_and_a_settings_frame_are_heads_until_whole() {
        let mut follower = FrameFollower::after(16);
        assert!(follower.mid_head(), "8 bytes of the preface to come");
        follower.feed(b"\r\nSM\r\n\r\n");
        assert!(!follower.mid_head());
        assert_eq!(follower.finished(), 1);
        let settings = frame(0x4, 0, 6);
        let mid = mid_after_each(&mut follower, &settings);
        // Mid-head through its 9-byte header; its payload is not a head.
        assert!(mid[..FRAME_HEADER_LEN - 1].iter().all(|m| *m));
        assert!(mid[FRAME_HEADER_LEN - 1..].iter().all(|m| !*m));
    }

    #[test]
    fn a_header_block_is_a_head_until_its_end_headers_frame_ends() {
        let mut follower = FrameFollower::after(24);
        let mut block = frame(HEADERS, 0, 100);
        block.extend(frame(CONTINUATION, 0, 50));
        block.extend(frame(CONTINUATION, END_HEADERS, 20));
        let mid = mid_after_each(&mut follower, &block);
        let (last, rest) = mid.split_last().expect("bytes");
        assert!(rest.iter().all(|m| *m), "mid-head throughout");
        assert!(!last);
        assert_eq!(follower.finished(), 1);
    }

    #[test]
    fn data_frames_are_stepped_over_and_heads_counted_apart() {
        let mut follower = FrameFollower::after(24);
        let mut bytes = frame(HEADERS, END_HEADERS, 30);
        bytes.extend(frame(0x0, 0, 16_384));
        bytes.extend(frame(HEADERS, END_HEADERS | 0x1, 10));
        // Whole, in one read: nothing left mid-head.
        follower.feed(&bytes);
        assert!(!follower.mid_head());
        // A DATA frame's payload arriving slowly is not a head.
        let data = frame(0x0, 0, 1000);
        follower.feed(&data[..500]);
        assert!(!follower.mid_head());
        follower.feed(&data[500..]);
        assert!(!follower.mid_head());
        // A frame header split across reads is.
        follower.feed(&frame(HEADERS, END_HEADERS, 5)[..4]);
        assert!(follower.mid_head());
    }

    #[test]
    fn any_length_is_followed() {
        let mut follower = FrameFollower::after(24);
        follower.feed(&[0xff, 0xff, 0xff, HEADERS, END_HEADERS, 0, 0, 0, 1]);
        assert!(follower.mid_head());
        assert_eq!(follower.payload_left, 0xff_ffff);
    }

    /// Any bytes, however they are split into reads: no panic, and the
    /// same verdict as read whole.
    #[test]
    fn any_bytes_in_any_reads_give_the_same_verdict() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            // Short frames, so that many fit: lengths below 64.
            let bytes: Vec<u8> = (0..next() % 512)
                .map(|i| match i % 9 {
                    0 | 1 => 0,
                    2 => (next() % 64) as u8,
                    _ => next() as u8,
                })
                .collect();
            let mut whole = FrameFollower::after(next() % 30);
            let mut split = whole.clone();
            whole.feed(&bytes);
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let take = (next() as usize % 20).min(rest.len());
                split.feed(&rest[..take]);
                rest = &rest[take..];
            }
            // (`finished` may differ: a piece read whole was never mid-head.)
            let state = |f: &FrameFollower| (f.mid_head(), f.payload_left, f.header_len, f.block_open);
            assert_eq!(state(&whole), state(&split));
        }
    }
}
