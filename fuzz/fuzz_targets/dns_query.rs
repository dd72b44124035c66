//! The GSLB DNS server's answer to one message (`node/src/gslb/answer.rs`,
//! hickory-proto underneath): any bytes a client can send over UDP or TCP.
//!
//! Checks: nothing panics; over UDP an answer is never more than
//! `AMPLIFICATION` times the query, and never more than 1232 bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlb_node::fuzzing::{AMPLIFICATION, Transport, dns_respond, dns_zone};

fuzz_target!(|data: &[u8]| {
    let zone = dns_zone();
    let client = std::net::IpAddr::from([10, 1, 2, 3]);
    if let Some(answer) = dns_respond(zone, data, client, Transport::Udp, 7) {
        assert!(answer.len() <= AMPLIFICATION * data.len(), "{} bytes for {}", answer.len(), data.len());
        assert!(answer.len() <= 1232);
    }
    let _ = dns_respond(zone, data, client, Transport::Tcp, 7);
});
