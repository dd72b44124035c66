//! The power of two choices: two distinct backends drawn uniformly among
//! those a pick allows, the better of the two kept. Drawing uses a
//! per-thread xorshift generator (no lock, no shared cache line); each draw
//! first tries a few random indices and only when those all miss (most
//! backends unavailable or tried) counts the allowed ones, so a pick is
//! O(1) in the common case and uniform in every case.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A non-zero seed, different per thread and per process.
fn seed() -> u64 {
    static THREADS: AtomicU64 = AtomicU64::new(0);
    let thread = THREADS.fetch_add(1, Ordering::Relaxed);
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    super::hash::mix(thread.rotate_left(48) ^ time.rotate_left(32) ^ u64::from(std::process::id())) | 1
}

/// A uniform index below `n` (> 0) from this thread's xorshift64* stream.
fn below(n: usize) -> usize {
    let x = STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    // Lemire's multiply-shift: bias below 2^-32 for any pool size.
    ((u128::from(x) * n as u128) >> 64) as usize
}

/// Random tries before counting.
const TRIES: usize = 4;

/// A uniform index below `n` that `allowed` and is not `except`.
fn draw(n: usize, allowed: &impl Fn(usize) -> bool, except: Option<usize>) -> Option<usize> {
    let ok = |i: usize| Some(i) != except && allowed(i);
    for _ in 0..TRIES {
        let i = below(n);
        if ok(i) {
            return Some(i);
        }
    }
    let count = (0..n).filter(|&i| ok(i)).count();
    if count == 0 {
        return None;
    }
    (0..n).filter(|&i| ok(i)).nth(below(count))
}

/// Of two distinct indices below `n` that `allowed` (or the only one), the
/// one `better(b, a)` prefers over the other (ties keep the first drawn).
pub fn choose(
    n: usize,
    allowed: impl Fn(usize) -> bool,
    better: impl Fn(usize, usize) -> bool,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let a = draw(n, &allowed, None)?;
    match draw(n, &allowed, Some(a)) {
        Some(b) if better(b, a) => Some(b),
        _ => Some(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_and_distinct() {
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            let pair = Cell::new(None);
            choose(
                5,
                |_| true,
                |b, a| {
                    pair.set(Some((a, b)));
                    false
                },
            );
            let (a, b) = pair.get().expect("two candidates");
            assert_ne!(a, b);
            counts[a] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn only_allowed_indices_and_none_when_none() {
        for _ in 0..1000 {
            assert_eq!(choose(100, |i| i == 97, |_, _| true), Some(97));
        }
        assert_eq!(choose(10, |_| false, |_, _| true), None);
        assert_eq!(choose(0, |_| true, |_, _| true), None);
    }
}
