//! Who a certificate speaks for. Every certificate `raftlb certs` issues
//! carries exactly one `raftlb://` URI in its subject alternative names:
//!
//! | certificate | URI |
//! |---|---|
//! | the cluster CA | `raftlb://CLUSTER/ca` |
//! | node 3 | `raftlb://CLUSTER/node/3` |
//! | person or tool `alice`, role `admin` | `raftlb://CLUSTER/admin/alice` |
//! | `bob`, role `read` | `raftlb://CLUSTER/read/bob` |
//!
//! The cluster id is part of the identity, so a certificate of another
//! cluster is told apart even when both clusters share a CA.

use std::fmt;

const SCHEME: &str = "raftlb://";

/// What a client certificate may do through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Status, listeners, pools, certificate list, sticky stats and lookups.
    Read,
    /// Everything `Read` may, and every write.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The subject of one certificate, without its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Ca,
    Node(u64),
    Client { name: String, role: Role },
}

/// A certificate's identity: its cluster and what it speaks for there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub cluster: String,
    pub subject: Subject,
}

impl Identity {
    pub fn node(cluster: &str, id: u64) -> Identity {
        Identity {
            cluster: cluster.to_string(),
            subject: Subject::Node(id),
        }
    }

    pub fn client(cluster: &str, name: &str, role: Role) -> Identity {
        Identity {
            cluster: cluster.to_string(),
            subject: Subject::Client {
                name: name.to_string(),
                role,
            },
        }
    }

    pub fn ca(cluster: &str) -> Identity {
        Identity {
            cluster: cluster.to_string(),
            subject: Subject::Ca,
        }
    }

    /// The node id, for a node certificate.
    pub fn node_id(&self) -> Option<u64> {
        match self.subject {
            Subject::Node(id) => Some(id),
            _ => None,
        }
    }

    /// The URI that carries this identity in a certificate.
    pub fn uri(&self) -> String {
        match &self.subject {
            Subject::Ca => format!("{SCHEME}{}/ca", self.cluster),
            Subject::Node(id) => format!("{SCHEME}{}/node/{id}", self.cluster),
            Subject::Client { name, role } => format!("{SCHEME}{}/{}/{name}", self.cluster, role.name()),
        }
    }

    /// Reads a `raftlb://` URI; `None` for any other URI or a malformed one.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(SCHEME)?;
        let mut parts = rest.split('/');
        let cluster = parts.next().filter(|c| is_name(c))?;
        let kind = parts.next()?;
        let value = parts.next();
        if parts.next().is_some() {
            return None;
        }
        let subject = match (kind, value) {
            ("ca", None) => Subject::Ca,
            ("node", Some(id)) => Subject::Node(id.parse().ok().filter(|id| *id >= 1)?),
            (role, Some(name)) if is_name(name) => Subject::Client {
                name: name.to_string(),
                role: Role::parse(role)?,
            },
            _ => return None,
        };
        Some(Identity {
            cluster: cluster.to_string(),
            subject,
        })
    }

    /// The identity in a DER certificate: its one `raftlb://` URI.
    pub fn of_certificate(der: &[u8]) -> Result<Identity, String> {
        let (_, x509) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("the certificate cannot be parsed as X.509: {e}"))?;
        let san = x509
            .subject_alternative_name()
            .map_err(|e| format!("its subject alternative names cannot be read: {e}"))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [uri] => Identity::from_uri(uri).ok_or_else(|| format!("its identity \"{uri}\" is malformed")),
            [] => Err(
                "it carries no raftlb identity (a raftlb:// URI); make cluster certificates with `raftlb certs`"
                    .to_string(),
            ),
            _ => Err(format!("it carries {} raftlb identities; one is allowed", uris.len())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Subject::Ca => write!(f, "the CA of cluster \"{}\"", self.cluster),
            Subject::Node(id) => write!(f, "node {id} of cluster \"{}\"", self.cluster),
            Subject::Client { name, role } => write!(
                f,
                "client \"{name}\" ({}) of cluster \"{}\"",
                role.name(),
                self.cluster
            ),
        }
    }
}

/// Cluster ids and client names: what config names allow (letters,
/// digits, `_ - .`, at most 64), all of which are safe in a URI.
pub fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for identity in [
            Identity::ca("prod-lb"),
            Identity::node("prod-lb", 3),
            Identity::client("prod-lb", "alice", Role::Admin),
            Identity::client("prod.lb_2", "bob-ci", Role::Read),
        ] {
            assert_eq!(Identity::from_uri(&identity.uri()), Some(identity.clone()));
        }
        assert_eq!(Identity::node("c", 3).uri(), "raftlb://c/node/3");
        assert_eq!(
            Identity::client("c", "alice", Role::Read).uri(),
            "raftlb://c/read/alice"
        );
    }

    #[test]
    fn malformed_uris_are_no_identity() {
        for uri in [
            "https://c/node/3",
            "raftlb://c/node/0",
            "raftlb://c/node/x",
            "raftlb://c/node/3/4",
            "raftlb://c/root/alice",
            "raftlb:///node/3",
            "raftlb://c a/node/3",
            "raftlb://c/admin/",
            "raftlb://c/ca/x",
        ] {
            assert_eq!(Identity::from_uri(uri), None, "{uri}");
        }
    }
}
