//! The sticky cookie's verifier (`node/src/sticky/cookie.rs`): what a
//! client sends back as the `cookie` policy's cookie. The input's first
//! bytes pick the cluster secret, the pool, a backend, an issue time and
//! an edit; the rest is a cookie value.
//!
//! Checks: nothing panics; a value is accepted only if it is, byte for
//! byte, the cookie issued for what it names (no other spelling of the
//! same bytes, so no malleable encoding); a genuine cookie is accepted,
//! and once edited (bytes replaced, inserted, cut) never is.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlb_config::StickySecret;
use raftlb_node::sticky::cookie::CookieKeys;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let Some((head, value)) = data.split_first_chunk::<8>() else {
        return;
    };
    let [secret, pool, backend, t0, t1, at, cut, _] = *head;
    let backends = [
        SocketAddr::from(([10, 0, 0, 1], 8080)),
        SocketAddr::from(([10, 0, 0, 2], 8080)),
        "[2001:db8::1]:443".parse().expect("an address"),
    ];
    let pool = ["app", "web", ""][usize::from(pool % 3)];
    let keys = CookieKeys::new(&StickySecret([secret; 32]), pool, backends.into_iter());

    if let Some((named, issued)) = keys.check(value) {
        assert_eq!(
            keys.issue(named, issued).as_bytes(),
            value,
            "only the issued spelling"
        );
    }

    let named = backends[usize::from(backend % 3)];
    let issued = u32::from_be_bytes([t0, t1, t0 ^ t1, at]);
    let genuine = keys.issue(named, issued).into_bytes();
    assert_eq!(keys.check(&genuine), Some((named, issued)));
    // Replace `cut` bytes at `at` with the rest of the input.
    let at = usize::from(at) % (genuine.len() + 1);
    let end = (at + usize::from(cut % 8)).min(genuine.len());
    let edited = [&genuine[..at], value, &genuine[end..]].concat();
    let accepted = keys.check(&edited);
    if edited == genuine {
        assert_eq!(accepted, Some((named, issued)));
    } else {
        assert_eq!(accepted, None, "an edited cookie");
    }
});
