//! Source-address access control lists: a listener's `[[listener.acl]]`
//! rules and the changes `raftlb ctl acl add|remove` commit.
//!
//! A rule allows or denies one network ([`Cidr`]). The most specific
//! network that holds a client's address decides (longest prefix wins, so
//! the order of rules never matters); an address no rule covers is
//! allowed. A deny-by-default listener is `0.0.0.0/0` and `::/0` denied,
//! plus the networks allowed. A listener keeps its rules sorted by network,
//! each network at most once, so two nodes holding the same rules hold the
//! same list.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network: an address whose bits after `prefix` are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    address: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `address/prefix`, or why not: the prefix is too long for the
    /// family, or the address has bits set after it.
    pub fn new(address: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let bits = family_bits(address);
        if prefix > bits {
            return Err(format!(
                "prefix /{prefix} is longer than an address ({bits} bits)"
            ));
        }
        let network = mask(address, prefix);
        if network != address {
            return Err(format!(
                "{address}/{prefix} has bits set after the prefix; the network is {network}/{prefix}"
            ));
        }
        Ok(Cidr { address, prefix })
    }

    /// The network of `prefix` bits holding `address`.
    pub fn containing(address: IpAddr, prefix: u8) -> Cidr {
        let prefix = prefix.min(family_bits(address));
        Cidr {
            address: mask(address, prefix),
            prefix,
        }
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `self` holds `address`.
    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv4() == self.address.is_ipv4() && mask(address, self.prefix) == self.address
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host).
    fn from_str(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("\"{address}\" is not an IP address"))?;
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| format!("\"{p}\" is not a prefix length"))?,
            None => family_bits(address),
        };
        Cidr::new(address, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

fn family_bits(address: IpAddr) -> u8 {
    if address.is_ipv4() { 32 } else { 128 }
}

/// `address` with every bit after `prefix` cleared.
pub fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & keep))
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & keep))
        }
    }
}

/// What a rule does with the clients it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AclAction {
    Allow,
    Deny,
}

impl AclAction {
    pub const ALL: [(&'static str, AclAction); 2] = [("allow", AclAction::Allow), ("deny", AclAction::Deny)];

    pub fn name(self) -> &'static str {
        match self {
            AclAction::Allow => "allow",
            AclAction::Deny => "deny",
        }
    }
}

/// One rule: `network` is allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AclRule {
    pub network: Cidr,
    pub action: AclAction,
}

/// A change to one listener's rules, committed as one entry: `set` adds
/// rules (replacing the action of a network already listed), then
/// `remove` drops networks (one not listed is no error).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclChange {
    pub set: Vec<AclRule>,
    pub remove: Vec<Cidr>,
}

/// `rules` in their canonical form: sorted by network, the last rule of a
/// network listed twice kept.
pub fn canonical(rules: impl IntoIterator<Item = AclRule>) -> Vec<AclRule> {
    let by_network: BTreeMap<Cidr, AclAction> = rules.into_iter().map(|r| (r.network, r.action)).collect();
    by_network
        .into_iter()
        .map(|(network, action)| AclRule { network, action })
        .collect()
}

/// `rules` (canonical) after `change`, canonical.
pub fn changed(rules: &[AclRule], change: &AclChange) -> Vec<AclRule> {
    let mut by_network: BTreeMap<Cidr, AclAction> = rules.iter().map(|r| (r.network, r.action)).collect();
    for rule in &change.set {
        by_network.insert(rule.network, rule.action);
    }
    for network in &change.remove {
        by_network.remove(network);
    }
    by_network
        .into_iter()
        .map(|(network, action)| AclRule { network, action })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_refuse_host_bits() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("198.18.0.7").to_string(), "198.18.0.7/32");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("0.0.0.0/0").prefix(), 0);
        let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(err.contains("the network is 10.0.0.0/8"), "{err}");
        assert!("10.0.0.0/33".parse::<Cidr>().unwrap_err().contains("32 bits"));
        assert!("ten/8".parse::<Cidr>().unwrap_err().contains("not an IP address"));
        assert!(
            "10.0.0.0/x"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("prefix length")
        );
    }

    #[test]
    fn containment_respects_family_and_prefix() {
        let net = cidr("198.18.0.0/15");
        assert!(net.contains("198.19.255.255".parse().unwrap()));
        assert!(!net.contains("198.20.0.0".parse().unwrap()));
        assert!(!net.contains("::ffff:198.18.0.1".parse().unwrap()));
        assert!(cidr("::/0").contains("2001:db8::1".parse().unwrap()));
        assert_eq!(
            Cidr::containing("2001:db8:1:2:3:4:5:6".parse().unwrap(), 64),
            cidr("2001:db8:1:2::/64")
        );
    }

    #[test]
    fn changes_keep_one_sorted_rule_per_network() {
        let deny = |n: &str| AclRule {
            network: cidr(n),
            action: AclAction::Deny,
        };
        let allow = |n: &str| AclRule {
            network: cidr(n),
            action: AclAction::Allow,
        };
        let rules = canonical([deny("10.0.0.0/8"), allow("10.1.0.0/16"), allow("10.0.0.0/8")]);
        assert_eq!(rules, vec![allow("10.0.0.0/8"), allow("10.1.0.0/16")]);
        let change = AclChange {
            set: vec![deny("192.0.2.0/24"), deny("10.1.0.0/16")],
            remove: vec![cidr("10.0.0.0/8"), cidr("203.0.113.0/24")],
        };
        assert_eq!(
            changed(&rules, &change),
            vec![deny("10.1.0.0/16"), deny("192.0.2.0/24")]
        );
    }
}
