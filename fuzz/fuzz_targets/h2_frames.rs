//! The HTTP/2 frame follower that times a client's request heads
//! (`node/src/dataplane/l7/h2_frames.rs`). The input's first four bytes set
//! how the client's bytes are split into reads; the rest is those bytes.
//!
//! Checks: nothing panics, and whether a head (the preface, a frame header,
//! a header block) is under way at the end does not depend on how the
//! bytes arrive (whole, byte by byte, or in the input's pieces). (How many
//! heads completed may differ: one read whole may never be seen mid-way.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlb_node::fuzzing::FrameFollower;

fuzz_target!(|data: &[u8]| {
    let Some((sizes, bytes)) = data.split_first_chunk::<4>() else {
        return;
    };
    let whole = follow(bytes, &[bytes.len().max(1)]);
    let bytewise = follow(bytes, &[1]);
    let sizes = sizes.map(|s| usize::from(s % 32) + 1);
    let pieces = follow(bytes, &sizes);
    assert_eq!(bytewise, whole, "under way at the end, read byte by byte");
    assert_eq!(pieces, whole, "under way at the end, read in pieces of {sizes:?}");
});

/// Whether a head is under way once `bytes` are read in pieces of the
/// sizes in `pieces` (cycled).
fn follow(bytes: &[u8], pieces: &[usize]) -> bool {
    let mut follower = FrameFollower::after(0);
    let mut fed = 0;
    for &piece in pieces.iter().cycle() {
        if fed == bytes.len() {
            break;
        }
        let next = (fed + piece).min(bytes.len());
        follower.feed(&bytes[fed..next]);
        fed = next;
    }
    follower.mid_head()
}
