//! The PROXY protocol (HAProxy's) as the spec holds it: which sources a
//! listener takes a PROXY header from (`accept_proxy`, `proxy_trusted`),
//! which version a pool sends its backends (`proxy_protocol`), and which
//! peers an HTTP listener believes about `X-Forwarded-For`
//! (`trusted_proxies`). These fields are first written in format 3 (see
//! [`format`](crate::format)).

use crate::acl::Cidr;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The PROXY protocol version a pool's backends are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyVersion {
    /// The text line (`PROXY TCP4 … \r\n`).
    V1,
    /// The binary header.
    V2,
}

impl ProxyVersion {
    pub const ALL: [(&'static str, ProxyVersion); 2] = [("v1", ProxyVersion::V1), ("v2", ProxyVersion::V2)];

    pub fn name(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        }
    }
}

/// Whether `address` is in one of `networks`.
pub fn trusted(networks: &[Cidr], address: IpAddr) -> bool {
    networks.iter().any(|network| network.contains(address))
}
