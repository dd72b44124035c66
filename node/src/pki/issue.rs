//! Making the cluster's certificates (rcgen, ring): a CA bound to one
//! cluster id, node certificates (server and client use, one node id
//! each) and person/tool certificates (client use, a name and a role).
//! Each leaf gets a fresh key. The CA can be loaded back from its two PEM
//! files to issue more later; the nodes never need its key.

use super::identity::{Identity, Role, Subject};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Ia5String, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use time::OffsetDateTime;

/// The key algorithm of a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: what every TLS stack speaks.
    #[default]
    EcdsaP256,
    Ed25519,
}

impl KeyType {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// When a new certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (some clock skew between hosts) for `days`.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(i64::from(days)),
        }
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A cluster CA that can sign.
pub struct Authority {
    cluster: String,
    certificate: rcgen::Certificate,
    /// The CA certificate as loaded or made (re-signing it to rebuild the
    /// issuer would change its bytes, not its name or key).
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn ca_params(cluster: &str, validity: Validity) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("raftlb CA {cluster}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![uri(&Identity::ca(cluster))?];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "raftlb");
    name.push(DnType::CommonName, common_name);
    name
}

fn uri(identity: &Identity) -> Result<SanType, String> {
    Ia5String::try_from(identity.uri())
        .map(SanType::URI)
        .map_err(|e| format!("\"{}\" cannot be a certificate URI: {e}", identity.uri()))
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("cannot make the {what}: {e}")
}

impl Authority {
    /// A new CA for `cluster`.
    pub fn new(cluster: &str, key_type: KeyType, validity: Validity) -> Result<Authority, String> {
        if !super::identity::is_name(cluster) {
            return Err(format!(
                "invalid cluster id \"{cluster}\": letters, digits, '_', '-' and '.', at most 64"
            ));
        }
        let key = KeyPair::generate_for(key_type.algorithm()).map_err(rcgen_error("CA key"))?;
        let certificate = ca_params(cluster, validity)?
            .self_signed(&key)
            .map_err(rcgen_error("CA certificate"))?;
        Ok(Authority {
            cluster: cluster.to_string(),
            cert_pem: certificate.pem(),
            certificate,
            key,
        })
    }

    /// The CA of `cert_pem` (made by [`Authority::new`]) with its key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority, String> {
        let der = super::material::first_certificate(cert_pem)?;
        let identity = Identity::of_certificate(&der)?;
        if identity.subject != Subject::Ca {
            return Err(format!("it is the certificate of {identity}, not of a CA"));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("the CA key cannot be read: {e}"))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("the CA certificate cannot be parsed: {e}"))?;
        if x509.public_key().raw != key.public_key_der().as_slice() {
            return Err("the CA key does not belong to the CA certificate".to_string());
        }
        let validity = Validity {
            not_before: x509.validity().not_before.to_datetime(),
            not_after: x509.validity().not_after.to_datetime(),
        };
        // Same name, same key: certificates it signs chain to the file's CA.
        let certificate = ca_params(&identity.cluster, validity)?
            .self_signed(&key)
            .map_err(rcgen_error("CA issuer"))?;
        Ok(Authority {
            cluster: identity.cluster,
            certificate,
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for node `id`: used as a server (its Raft and admin
    /// port) and as a client (to its peers).
    pub fn node(&self, id: u64, key_type: KeyType, validity: Validity) -> Result<Issued, String> {
        if id == 0 {
            return Err("node ids start at 1".to_string());
        }
        self.certificate_for(&Identity::node(&self.cluster, id), key_type, validity)
    }

    /// A certificate for a person or tool calling the admin API.
    pub fn client(
        &self,
        name: &str,
        role: Role,
        key_type: KeyType,
        validity: Validity,
    ) -> Result<Issued, String> {
        if !super::identity::is_name(name) {
            return Err(format!(
                "invalid client name \"{name}\": letters, digits, '_', '-' and '.', at most 64"
            ));
        }
        self.certificate_for(&Identity::client(&self.cluster, name, role), key_type, validity)
    }

    /// A certificate for any identity, of this CA's cluster or not: what
    /// [`Authority::node`] and [`Authority::client`] make for their own
    /// cluster, and what a test needs to show another cluster's refused.
    pub fn certificate_for(
        &self,
        identity: &Identity,
        key_type: KeyType,
        validity: Validity,
    ) -> Result<Issued, String> {
        let (common_name, usages): (String, &[ExtendedKeyUsagePurpose]) = match &identity.subject {
            Subject::Node(id) => (
                format!("raftlb node {id} of {}", identity.cluster),
                &[
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            Subject::Client { name, role } => (
                format!("{name} ({}) of raftlb {}", role.name(), identity.cluster),
                &[ExtendedKeyUsagePurpose::ClientAuth],
            ),
            Subject::Ca => return Err("a CA certificate is made by Authority::new".to_string()),
        };
        self.issue(identity, &common_name, usages, key_type, validity)
    }

    fn issue(
        &self,
        identity: &Identity,
        common_name: &str,
        usages: &[ExtendedKeyUsagePurpose],
        key_type: KeyType,
        validity: Validity,
    ) -> Result<Issued, String> {
        let key = KeyPair::generate_for(key_type.algorithm()).map_err(rcgen_error("key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.subject_alt_names = vec![uri(identity)?];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages.to_vec();
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .map_err(rcgen_error("certificate"))?;
        Ok(Issued {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
