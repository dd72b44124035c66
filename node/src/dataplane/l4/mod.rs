//! Layer 4: TCP connections spliced to a backend, UDP datagrams relayed per
//! client session (QUIC's by connection ID, [`quic_route`]).

pub mod quic_route;
pub mod tcp;
pub mod udp;
pub mod udp_front;
