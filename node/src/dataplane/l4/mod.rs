//! Layer 4: TCP connections spliced to a backend, UDP datagrams relayed per
//! client session.

pub mod tcp;
pub mod udp;
