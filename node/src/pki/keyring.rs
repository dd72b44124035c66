//! [`Keyring`]: one side's cluster identity, current and reloadable, and
//! the rustls configurations built on it. Every handshake reads the
//! current certificate, key and CA bundle, so replacing the files on disk
//! (renewal, CA rotation with a two-CA bundle) changes what new
//! connections present and accept, with no restart; connections already
//! open carry on. A reload that fails, or that would change who this side
//! is, keeps the old identity and says why.
//!
//! Cluster links are TLS 1.3 only, with client certificates required, and
//! without session resumption: every new connection verifies the peer's
//! certificate against the CA bundle of that moment.

use super::identity::{Identity, Subject};
use super::material::{FileError, Files, Material};
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A file's identity on disk, to notice a replacement or an edit.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

fn stamp(files: &Files) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    [&files.ca, &files.cert, &files.key]
        .iter()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
        })
        .collect()
}

/// This side's cluster identity, following its files.
pub struct Keyring {
    files: Files,
    current: ArcSwap<Material>,
    /// Verifies client certificates against the current CA bundle.
    clients: ArcSwap<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
    stamp: Mutex<Stamp>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("identity", &self.current.load().identity)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Whom a dialling side expects to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Node `id` of this side's cluster (a Raft peer, a known leader).
    Node(u64),
    /// Any node of this side's cluster (`raftlb ctl --node ADDR`).
    AnyNode,
}

fn client_verifier(
    material: &Material,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    WebPkiClientVerifier::builder_with_provider(Arc::clone(&material.roots), Arc::clone(provider))
        .build()
        .map_err(|e| format!("the CA bundle cannot verify client certificates: {e}"))
}

impl Keyring {
    /// Reads and checks the files.
    pub fn load(files: Files) -> Result<Arc<Keyring>, FileError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamped = stamp(&files);
        let material = Material::load(&files)?;
        let clients = client_verifier(&material, &provider).map_err(|reason| FileError {
            file: files.ca.display().to_string(),
            reason,
        })?;
        Ok(Arc::new(Keyring {
            files,
            current: ArcSwap::from_pointee(material),
            clients: ArcSwap::from_pointee(clients),
            provider,
            stamp: Mutex::new(stamped),
        }))
    }

    /// Who this side is now.
    pub fn identity(&self) -> Identity {
        self.current.load().identity.clone()
    }

    /// The current material.
    pub fn material(&self) -> Arc<Material> {
        self.current.load_full()
    }

    pub fn files(&self) -> &Files {
        &self.files
    }

    /// Reads the files again if any of them changed on disk since the last
    /// read; `Ok(true)` when a new identity is in use.
    pub fn reload_if_changed(&self) -> Result<bool, FileError> {
        let now = stamp(&self.files);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *last == now {
                return Ok(false);
            }
            // Once per change, even if the new files are refused: the
            // next edit is what tries again.
            *last = now;
        }
        self.reload().map(|()| true)
    }

    /// Reads the files again and uses them if they are sound and name the
    /// same identity as before.
    pub fn reload(&self) -> Result<(), FileError> {
        let material = Material::load(&self.files)?;
        let before = self.identity();
        if material.identity != before {
            return Err(FileError {
                file: self.files.cert.display().to_string(),
                reason: format!(
                    "the new certificate is the certificate of {}, but this side is {before}; keeping the old one",
                    material.identity
                ),
            });
        }
        let clients = client_verifier(&material, &self.provider).map_err(|reason| FileError {
            file: self.files.ca.display().to_string(),
            reason,
        })?;
        self.clients.store(Arc::new(clients));
        self.current.store(Arc::new(material));
        Ok(())
    }

    /// What a node's Raft and admin port serves with: this identity, and
    /// client certificates required and checked against the CA bundle.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(ClusterClients(Arc::clone(self))))
            .with_cert_resolver(Arc::new(Current(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// What a dialling side connects with, expecting to reach `expect`.
    pub fn client_config(self: &Arc<Self>, expect: Expect) -> Result<Arc<ClientConfig>, rustls::Error> {
        let verifier = ClusterServer {
            keyring: Arc::clone(self),
            expect,
        };
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(Current(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// Presents the keyring's current certificate, as server or client.
#[derive(Debug)]
struct Current(Arc<Keyring>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current.load().key))
    }
}

impl ResolvesClientCert for Current {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current.load().key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The answering side's check of client certificates: signed by a CA of
/// the current bundle and valid now. Who the certificate speaks for is
/// judged per call (see `control::authz`), where the refusal can say why
/// in words rather than a TLS alert.
#[derive(Debug)]
struct ClusterClients(Arc<Keyring>);

impl ClientCertVerifier for ClusterClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundle changes at runtime; an empty list makes clients send
        // the one certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .clients
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.clients.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.clients.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clients.load().supported_verify_schemes()
    }
}

/// The dialling side's check of a node's certificate: signed by a CA of
/// the current bundle, valid now, and the certificate of the expected
/// node of this side's cluster. Host names play no part: a node is known
/// by its identity, not by the address it was reached at.
#[derive(Debug)]
struct ClusterServer {
    keyring: Arc<Keyring>,
    expect: Expect,
}

/// A node's certificate that verifies but speaks for someone else.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WrongIdentity(String);

fn wrong(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(
        WrongIdentity(reason),
    ))))
}

impl ServerCertVerifier for ClusterServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let material = self.keyring.current.load();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &material.roots,
            intermediates,
            now,
            self.keyring.provider.signature_verification_algorithms.all,
        )?;
        let theirs = Identity::of_certificate(end_entity)
            .map_err(|e| wrong(format!("it is not a raftlb node's: {e}")))?;
        let ours = &material.identity.cluster;
        if &theirs.cluster != ours {
            return Err(wrong(format!(
                "it is the certificate of {theirs}, and we belong to cluster \"{ours}\""
            )));
        }
        match (self.expect, &theirs.subject) {
            (Expect::AnyNode, Subject::Node(_)) => {}
            (Expect::Node(expected), Subject::Node(id)) if *id == expected => {}
            (Expect::Node(expected), _) => {
                return Err(wrong(format!(
                    "it is the certificate of {theirs}, but node {expected} was expected at that address"
                )));
            }
            (Expect::AnyNode, _) => {
                return Err(wrong(format!("it is the certificate of {theirs}, not of a node")));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.keyring.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.keyring.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.keyring
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue::{Authority, KeyType, Validity};
    use crate::pki::{Files, Role};

    /// A CA of `key_type` and, in `dir`, the files of node 1, node 2 and a client.
    fn make(dir: &std::path::Path, key_type: KeyType) -> [Files; 3] {
        std::fs::create_dir_all(dir).unwrap();
        let ca = Authority::new("unit", key_type, Validity::days(1)).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        let issued = [
            ("node-1", ca.node(1, key_type, Validity::days(1)).unwrap()),
            ("node-2", ca.node(2, key_type, Validity::days(1)).unwrap()),
            (
                "client",
                ca.client("ops", Role::Admin, key_type, Validity::days(1))
                    .unwrap(),
            ),
        ];
        issued.map(|(stem, issued)| {
            let files = Files {
                ca: dir.join("ca.pem"),
                cert: dir.join(format!("{stem}.pem")),
                key: dir.join(format!("{stem}.key")),
            };
            std::fs::write(&files.cert, &issued.cert_pem).unwrap();
            std::fs::write(&files.key, &issued.key_pem).unwrap();
            files
        })
    }

    /// A TLS handshake in memory between `server` and `client` expecting `expect`.
    async fn handshake(server: &Arc<Keyring>, client: &Arc<Keyring>, expect: Expect) -> Result<(), String> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config().unwrap());
        let connector = tokio_rustls::TlsConnector::from(client.client_config(expect).unwrap());
        let name = ServerName::try_from("node").unwrap();
        let (accepted, connected) = tokio::join!(acceptor.accept(far), connector.connect(name, near));
        connected.map_err(|e| e.to_string())?;
        accepted.map(drop).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn both_key_types_handshake_and_the_expected_node_is_checked() {
        for key_type in [KeyType::EcdsaP256, KeyType::Ed25519] {
            let dir =
                std::env::temp_dir().join(format!("raftlb-keyring-{}-{key_type:?}", std::process::id()));
            let [one, two, client] = make(&dir, key_type);
            let (one, two, client) = (
                Keyring::load(one).unwrap(),
                Keyring::load(two).unwrap(),
                Keyring::load(client).unwrap(),
            );
            assert_eq!(one.identity(), Identity::node("unit", 1));
            handshake(&one, &two, Expect::Node(1)).await.unwrap();
            handshake(&one, &client, Expect::AnyNode).await.unwrap();
            let wrong = handshake(&one, &two, Expect::Node(3)).await.unwrap_err();
            assert!(wrong.contains("but node 3 was expected"), "{key_type:?}: {wrong}");
            let not_a_node = handshake(&client, &one, Expect::AnyNode).await.unwrap_err();
            assert!(!not_a_node.is_empty(), "a client certificate is no server's");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
