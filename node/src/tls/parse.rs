//! A PEM certificate chain and key → what rustls serves, with the DNS
//! names the leaf is valid for and when it expires; or the reason it
//! cannot be served (bad PEM, no certificate, key of another certificate,
//! unsupported key type).

use raftlb_config::Certificate;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate ready to serve.
#[derive(Debug)]
pub struct Parsed {
    pub key: CertifiedKey,
    /// DNS names from the subject alternative names (the common name if
    /// there are none), wildcards included as written.
    pub names: Vec<String>,
    /// Validity, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("the certificate file holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate,
    #[error("the certificate PEM cannot be read: {0}")]
    CertificatePem(String),
    #[error("the key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    KeyPem(String),
    #[error("the private key is not a supported type (RSA, ECDSA P-256/P-384, Ed25519): {0}")]
    KeyType(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate cannot be parsed as X.509: {0}")]
    X509(String),
}

/// What a certificate chain's leaf says of itself: the public half,
/// which `ctl cert list` shows (admin replies carry no key).
#[derive(Debug, Clone)]
pub struct Described {
    /// DNS names from the subject alternative names (the common name if
    /// there are none), wildcards included as written.
    pub names: Vec<String>,
    /// Validity, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the leaf, colon-separated hex.
    pub fingerprint: String,
}

fn chain(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::CertificatePem(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(chain)
}

/// Describes the leaf of `chain_pem`.
pub fn describe(chain_pem: &str) -> Result<Described, CertError> {
    let chain = chain(chain_pem)?;
    describe_leaf(&chain[0])
}

fn describe_leaf(leaf: &[u8]) -> Result<Described, CertError> {
    let (_, x509) = x509_parser::parse_x509_certificate(leaf).map_err(|e| CertError::X509(e.to_string()))?;
    let mut names: Vec<String> = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            x509.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_string)),
        );
    }
    Ok(Described {
        names,
        not_before: x509.validity().not_before.timestamp(),
        not_after: x509.validity().not_after.timestamp(),
        fingerprint: crate::certs::fingerprint(leaf),
    })
}

/// Parses `certificate` for serving.
pub fn parse(certificate: &Certificate) -> Result<Parsed, CertError> {
    let chain = chain(&certificate.chain_pem)?;
    let leaf = chain[0].clone();
    let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes())
        .map_err(|e| CertError::KeyPem(e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CertError::KeyType(e.to_string()))?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        Ok(()) => {}
        // rustls cannot tell for some key types; the handshake will.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(CertError::KeyMismatch),
    }
    let described = describe_leaf(&leaf)?;
    Ok(Parsed {
        key,
        names: described.names,
        not_before: described.not_before,
        not_after: described.not_after,
    })
}
