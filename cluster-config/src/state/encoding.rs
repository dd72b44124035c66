//! How a [`ClusterState`] is encoded: in its cluster version's format (see
//! [`format`](crate::format)). Up to version 2 its fields in order, the
//! first a `bool` (byte 0 or 1), so the bytes are those every release
//! wrote. From version 3 on the version comes first, as one byte no `bool`
//! takes, then the same fields in that format: a reader of any version
//! tells the two apart, in a snapshot and in an admin reply alike.

use super::ClusterState;
use crate::certificate::Certificate;
use crate::format::{self, Formats};
use crate::gslb::SiteVerdicts;
use crate::health::HealthReports;
use crate::spec::ClusterSpec;
use crate::sticky::StickySecret;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// The first version whose states start with their version.
pub(crate) const VERSIONED: u16 = 3;
/// Elements of the encoding: the version byte, then seven fields (the
/// last, the GSLB site verdicts, no bytes before format 6).
const ELEMENTS: usize = 8;

/// The site verdicts as the encoding holds them: nothing before format 6.
#[derive(Serialize, Deserialize)]
struct Sites(#[serde(with = "crate::format::since_v6")] SiteVerdicts);

impl Serialize for ClusterState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let version = self.cluster_version();
        format::encoded_in(version, || {
            let versioned = version >= VERSIONED;
            let mut tuple = serializer.serialize_tuple(ELEMENTS - usize::from(!versioned))?;
            if versioned {
                let byte = u8::try_from(version).map_err(serde::ser::Error::custom)?;
                tuple.serialize_element(&byte)?;
            }
            tuple.serialize_element(&self.bootstrapped)?;
            tuple.serialize_element(&self.spec)?;
            tuple.serialize_element(&self.vip_owners)?;
            tuple.serialize_element(&self.sticky_secret)?;
            tuple.serialize_element(&self.certificates)?;
            tuple.serialize_element(&self.health)?;
            tuple.serialize_element(&Sites(self.sites.clone()))?;
            tuple.end()
        })
    }
}

impl<'de> Deserialize<'de> for ClusterState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ClusterState, D::Error> {
        deserializer.deserialize_tuple(ELEMENTS, StateVisitor)
    }
}

struct StateVisitor;

impl<'de> Visitor<'de> for StateVisitor {
    type Value = ClusterState;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cluster state")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClusterState, A::Error> {
        let first: u8 = next(&mut seq)?;
        let (version, bootstrapped) = match first {
            0 | 1 => (0, first == 1),
            byte => {
                let version = u16::from(byte);
                if version < VERSIONED || !Formats::BUILT.contains(version) {
                    return Err(de::Error::custom(format!(
                        "a cluster state of version {version}, but this binary reads formats {}",
                        Formats::BUILT
                    )));
                }
                (version, format::encoded_in(version, || next(&mut seq))?)
            }
        };
        format::encoded_in(version, || {
            Ok(ClusterState {
                bootstrapped,
                spec: next::<ClusterSpec, _>(&mut seq)?,
                vip_owners: next::<BTreeMap<IpAddr, u64>, _>(&mut seq)?,
                sticky_secret: next::<Option<StickySecret>, _>(&mut seq)?,
                certificates: next::<BTreeMap<String, Certificate>, _>(&mut seq)?,
                health: next::<HealthReports, _>(&mut seq)?,
                sites: next::<Sites, _>(&mut seq)?.0,
                cluster_version: version,
                applying_index: 0,
            })
        })
    }
}

fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(seq: &mut A) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::custom("a cluster state cut short"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::proxy::ProxyVersion;

    fn with_proxy_pool() -> ClusterState {
        let mut state = ClusterState::default();
        for version in 2..=VERSIONED {
            assert!(state.apply(Command::SetClusterVersion(version)).is_applied());
        }
        let file = "[node]\nid = 1\n\n[[pool]]\nname = \"app\"\nbackends = [{ address = \"10.0.0.1:80\" }]\n";
        let mut pool = crate::parse("t.toml", file).unwrap().cluster.pools.remove(0);
        pool.proxy_protocol = Some(ProxyVersion::V2);
        assert!(state.apply(Command::AddPool(pool)).is_applied());
        state
    }

    #[test]
    fn a_state_of_version_three_says_so_and_keeps_its_new_fields() {
        let state = with_proxy_pool();
        let bytes = postcard::to_allocvec(&state).unwrap();
        assert_eq!(bytes[0], 3);
        let decoded: ClusterState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, state);
        assert_eq!(decoded.spec.pools[0].proxy_protocol, Some(ProxyVersion::V2));
    }

    #[test]
    fn a_state_before_version_three_has_no_version_byte() {
        let mut state = ClusterState::default();
        assert!(state.apply(Command::SetClusterVersion(2)).is_applied());
        let bytes = postcard::to_allocvec(&state).unwrap();
        assert_eq!(bytes[0], 0, "bootstrapped: false");
        let decoded: ClusterState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.spec, state.spec);
    }

    #[test]
    fn a_version_this_binary_does_not_read_is_refused() {
        let mut bytes = postcard::to_allocvec(&with_proxy_pool()).unwrap();
        bytes[0] = 9;
        assert!(postcard::from_bytes::<ClusterState>(&bytes).is_err());
    }
}
