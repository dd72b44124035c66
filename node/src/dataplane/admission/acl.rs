//! [`AclTable`]: a listener's ACL as the accept path reads it — longest
//! prefix match over one hash map per prefix length present, so a lookup
//! costs one hash per distinct length (a handful in practice), whatever
//! the number of rules; an empty ACL costs nothing.

use raftlb_config::{AclAction, AclRule};
use std::collections::HashMap;
use std::net::IpAddr;

/// The rules of one listener, ready for lookups.
#[derive(Debug, Default)]
pub struct AclTable {
    /// IPv4 networks by prefix length, longest first.
    v4: Vec<(u8, HashMap<u32, AclAction>)>,
    /// IPv6 networks by prefix length, longest first.
    v6: Vec<(u8, HashMap<u128, AclAction>)>,
}

impl AclTable {
    pub fn build(rules: &[AclRule]) -> AclTable {
        let mut v4: HashMap<u8, HashMap<u32, AclAction>> = HashMap::new();
        let mut v6: HashMap<u8, HashMap<u128, AclAction>> = HashMap::new();
        for rule in rules {
            let prefix = rule.network.prefix();
            match rule.network.address() {
                IpAddr::V4(a) => v4.entry(prefix).or_default().insert(a.into(), rule.action),
                IpAddr::V6(a) => v6.entry(prefix).or_default().insert(a.into(), rule.action),
            };
        }
        AclTable {
            v4: longest_first(v4),
            v6: longest_first(v6),
        }
    }

    /// Whether `source` may connect: the most specific rule holding it
    /// decides; no rule, allowed. An IPv4-mapped IPv6 address is read as
    /// the IPv4 address it carries.
    pub fn allows(&self, source: IpAddr) -> bool {
        let action = match source.to_canonical() {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4.iter().find_map(|(len, networks)| {
                    let masked = bits & u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    networks.get(&masked).copied()
                })
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.v6.iter().find_map(|(len, networks)| {
                    let masked = bits & u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    networks.get(&masked).copied()
                })
            }
        };
        action != Some(AclAction::Deny)
    }
}

/// The networks of each length, longest length first.
fn longest_first<K>(by_length: HashMap<u8, HashMap<K, AclAction>>) -> Vec<(u8, HashMap<K, AclAction>)> {
    let mut lengths: Vec<_> = by_length.into_iter().collect();
    lengths.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    lengths
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlb_config::Cidr;

    fn rule(network: &str, action: AclAction) -> AclRule {
        AclRule {
            network: network.parse::<Cidr>().unwrap(),
            action,
        }
    }

    #[test]
    fn the_longest_prefix_decides_and_the_rest_is_allowed() {
        let table = AclTable::build(&[
            rule("198.18.0.0/15", AclAction::Deny),
            rule("198.18.7.0/24", AclAction::Allow),
            rule("198.18.7.9/32", AclAction::Deny),
            rule("2001:db8::/32", AclAction::Deny),
        ]);
        let allows = |a: &str| table.allows(a.parse().unwrap());
        assert!(!allows("198.19.0.1"));
        assert!(allows("198.18.7.1"));
        assert!(!allows("198.18.7.9"));
        assert!(!allows("::ffff:198.18.7.9"));
        assert!(allows("203.0.113.1"));
        assert!(!allows("2001:db8:1::1"));
        assert!(allows("2001:db9::1"));
    }

    #[test]
    fn deny_by_default_with_exceptions() {
        let table = AclTable::build(&[
            rule("0.0.0.0/0", AclAction::Deny),
            rule("::/0", AclAction::Deny),
            rule("127.0.0.0/8", AclAction::Allow),
        ]);
        assert!(table.allows("127.0.0.2".parse().unwrap()));
        assert!(!table.allows("198.18.0.1".parse().unwrap()));
        assert!(!table.allows("::1".parse().unwrap()));
        assert!(AclTable::build(&[]).allows("198.18.0.1".parse().unwrap()));
    }
}
