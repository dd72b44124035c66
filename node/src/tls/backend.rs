//! TLS from the balancer to a pool's backends (`[pool.tls]`): a rustls
//! client that checks the backends' certificates against the pool's CA
//! file, or, with `insecure = true`, encrypts without checking.

use raftlb_config::{BackendProtocol, BackendTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How one pool reaches its backends over TLS.
#[derive(Clone)]
pub struct BackendConnector {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for BackendConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BackendConnector {
    /// The connector for `tls`; the error says why there is none (an
    /// unreadable CA file, a bad server name).
    pub fn build(tls: &BackendTls, protocol: BackendProtocol) -> Result<BackendConnector, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let mut config = if tls.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
                .with_no_client_auth()
        } else {
            let path = tls.ca_file.as_deref().unwrap_or_default();
            let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {path}: {e}"))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("ca_file {path}: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca_file {path}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("ca_file {path} holds no certificate"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = match protocol {
            BackendProtocol::Http1 => vec![b"http/1.1".to_vec()],
            BackendProtocol::H2 => vec![b"h2".to_vec()],
        };
        let server_name = match &tls.server_name {
            Some(name) => {
                Some(ServerName::try_from(name.clone()).map_err(|e| format!("server_name {name}: {e}"))?)
            }
            None => None,
        };
        Ok(BackendConnector {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the TLS handshake with the backend at `address` over `stream`.
    pub async fn connect(
        &self,
        stream: TcpStream,
        address: SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        self.connector.connect(name, stream).await
    }
}

/// `insecure = true`: every certificate is accepted (signatures are still
/// checked, so the session is at least with the holder of the key shown).
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
