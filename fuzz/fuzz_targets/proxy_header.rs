//! The PROXY protocol header parser (`node/src/dataplane/proxy_protocol/header.rs`):
//! the first bytes of a connection on an `accept_proxy` listener.
//!
//! Checks: nothing panics; a complete header is never longer than the
//! input nor than the protocol's bounds; the parser's verdict on a prefix
//! is consistent (a prefix of a complete header is incomplete, never
//! malformed, and never complete with another length); the addresses it
//! names encode to a header that parses to the same addresses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlb_config::ProxyVersion;
use raftlb_node::fuzzing::proxy_header::{self, MAX_V1_LEN, MAX_V2_LEN, Parsed};

fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Complete { len, addresses }) = proxy_header::parse(data) else {
        return;
    };
    assert!(len <= data.len(), "a header of {len} bytes in {} bytes", data.len());
    assert!(len <= MAX_V1_LEN.max(MAX_V2_LEN));
    for cut in 0..len {
        assert_eq!(proxy_header::parse(&data[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
    }
    assert_eq!(
        proxy_header::parse(&data[..len]),
        Ok(Parsed::Complete { len, addresses })
    );
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let encoded = proxy_header::encode(version, addresses);
        match proxy_header::parse(&encoded) {
            Ok(Parsed::Complete { len, addresses: again }) => {
                assert_eq!(len, encoded.len());
                let same_family = addresses.is_none_or(|a| a.source.is_ipv4() == a.destination.is_ipv4());
                if same_family {
                    assert_eq!(again, addresses);
                }
            }
            other => panic!("{version:?} of {addresses:?} parses as {other:?}"),
        }
    }
});
