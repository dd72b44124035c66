//! A Raft peer's address as the other nodes dial it: `IP:PORT`, or
//! `NAME:PORT` for a DNS name resolved at every connection (a Kubernetes
//! StatefulSet's `raftlb-0.raftlb-peers.raftlb.svc.cluster.local:7000`,
//! whose address changes when the pod moves). It is what the Raft
//! membership records, so a name keeps working after its address changes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// `IP:PORT` or `NAME:PORT`, checked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerAddress(String);

impl PeerAddress {
    /// Parses `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT` (a DNS name of
    /// letters, digits, `-` and `.`, at most 253 characters).
    pub fn parse(text: &str) -> Result<PeerAddress, String> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Ok(PeerAddress::from(address));
        }
        let invalid = || {
            format!(
                "invalid address \"{text}\" (expected IP:PORT or NAME:PORT, e.g. \"10.0.0.1:7000\" or \
                 \"raftlb-0.raftlb-peers:7000\")"
            )
        };
        let (name, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        let name_ok = name.len() <= 253
            && name.split('.').all(label_ok)
            && name.chars().any(|c| c.is_ascii_alphabetic());
        match port_ok && name_ok {
            true => Ok(PeerAddress(text.to_string())),
            false => Err(invalid()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is a loopback IP address (a name never counts as one).
    pub fn is_loopback(&self) -> bool {
        self.0.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
    }
}

impl From<SocketAddr> for PeerAddress {
    fn from(address: SocketAddr) -> Self {
        PeerAddress(address.to_string())
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_and_dns_names_with_ports_are_addresses() {
        for good in [
            "10.0.0.1:7000",
            "[::1]:7000",
            "raftlb-0.raftlb-peers.raftlb.svc.cluster.local:7000",
            "lb1:7000",
        ] {
            assert_eq!(
                PeerAddress::parse(good).unwrap().as_str().len(),
                good.len(),
                "{good}"
            );
        }
        for bad in [
            "10.0.0.1",
            "lb1",
            "lb1:0",
            "lb1:70000",
            "-lb:7000",
            "lb..x:7000",
            "l b:7000",
            "10.0.0:7000",
            ":7000",
        ] {
            let error = PeerAddress::parse(bad).unwrap_err();
            assert!(error.contains(bad), "{bad}: {error}");
        }
        assert!(PeerAddress::parse("127.0.0.2:7000").unwrap().is_loopback());
        assert!(!PeerAddress::parse("localhost:7000").unwrap().is_loopback());
    }
}
