//! The three files of a cluster identity (`[cluster.tls]` on a node;
//! `--ca/--cert/--key` for `raftlb ctl`), read and checked: the CA bundle
//! (one CA, or two while the CA is rotated), this side's certificate chain
//! and its private key. Every problem names the file and says what is
//! wrong with it: unreadable, no PEM inside, a key that is not the
//! certificate's, a certificate not signed by a CA of the bundle, expired,
//! or without a raftlb identity.

use super::identity::Identity;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;

use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a cluster identity is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded, checked identity: what TLS needs on either side of a link.
#[derive(Debug)]
pub struct Material {
    /// The CAs whose certificates this side trusts.
    pub roots: Arc<RootCertStore>,
    /// This side's chain (leaf first) and key.
    pub key: Arc<CertifiedKey>,
    /// Who the leaf speaks for.
    pub identity: Identity,
    /// When the leaf expires, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Why a file of a cluster identity cannot be used; names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct FileError {
    pub file: String,
    pub reason: String,
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| FileError {
        file: path.display().to_string(),
        reason: format!("cannot read it: {e}"),
    })
}

fn in_file(path: &Path) -> impl Fn(String) -> FileError + '_ {
    move |reason| FileError {
        file: path.display().to_string(),
        reason,
    }
}

/// The first PEM certificate of `pem`, as DER.
pub fn first_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    certificates(pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| "it holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")".to_string())
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("its PEM cannot be read: {e}"))
}

/// Validity end of a DER certificate, seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Result<i64, String> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("it cannot be parsed as X.509: {e}"))?;
    Ok(x509.validity().not_after.timestamp())
}

/// "2027-01-31 12:00:00 UTC" for a Unix time.
pub fn utc(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds).map_or_else(
        |_| format!("{seconds} s after 1970"),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        },
    )
}

impl Material {
    /// Reads and checks the three files.
    pub fn load(files: &Files) -> Result<Material, FileError> {
        let roots = load_roots(&files.ca)?;
        let chain = certificates(&read(&files.cert)?).map_err(in_file(&files.cert))?;
        let Some(leaf) = chain.first().cloned() else {
            return Err(in_file(&files.cert)(
                "it holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")".to_string(),
            ));
        };
        let identity = Identity::of_certificate(&leaf).map_err(in_file(&files.cert))?;
        let not_after = not_after(&leaf).map_err(in_file(&files.cert))?;
        let key_pem = read(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            in_file(&files.key)(format!(
                "it holds no PEM private key (PKCS#8, PKCS#1 or SEC1; unencrypted): {e}"
            ))
        })?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| in_file(&files.key)(format!("the key is not a supported type: {e}")))?;
        let key = CertifiedKey::new(chain, signer);
        match key.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(in_file(&files.key)(format!(
                    "this key does not belong to the certificate in {}",
                    files.cert.display()
                )));
            }
        }
        check_chain(&key, roots.clone()).map_err(|reason| {
            in_file(&files.cert)(format!(
                "{reason} (checked against the CA bundle {})",
                files.ca.display()
            ))
        })?;
        Ok(Material {
            roots: Arc::new(roots),
            key: Arc::new(key),
            identity,
            not_after,
        })
    }
}

/// Every CA of the bundle; each must be a raftlb CA (a `raftlb://…/ca`
/// identity), so a node never trusts a public CA by mistake.
fn load_roots(path: &Path) -> Result<RootCertStore, FileError> {
    let cas = certificates(&read(path)?).map_err(in_file(path))?;
    if cas.is_empty() {
        return Err(in_file(path)(
            "it holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")".to_string(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for (i, ca) in cas.into_iter().enumerate() {
        let identity = Identity::of_certificate(&ca)
            .map_err(|reason| in_file(path)(format!("certificate {} of the bundle: {reason}", i + 1)))?;
        if identity.subject != super::identity::Subject::Ca {
            return Err(in_file(path)(format!(
                "certificate {} of the bundle is the certificate of {identity}, not a CA (is this the ca_file?)",
                i + 1
            )));
        }
        roots
            .add(ca)
            .map_err(|e| in_file(path)(format!("certificate {} of the bundle: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// Whether `key`'s chain is signed by one of `roots` and valid now
/// (checked for client use, which node and person certificates share).
fn check_chain(key: &CertifiedKey, roots: RootCertStore) -> Result<(), String> {
    let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("the CA bundle cannot verify anything: {e}"))?;
    verifier
        .verify_client_cert(leaf, key.cert.get(1..).unwrap_or_default(), UnixTime::now())
        .map(|_| ())
        .map_err(|e| super::explain::certificate_error(&e))
}
