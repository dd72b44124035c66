//! An HTTP/3 client on quinn and h3, for the tests and the load client
//! (`h3load`): one QUIC connection, requests sent on it concurrently.

use bytes::{Buf, Bytes};
use std::net::SocketAddr;
use std::sync::Arc;

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// A QUIC client configuration for HTTP/3 (ALPN `h3`, TLS 1.3) that
/// trusts `roots`, or any certificate when `None` (the load client's).
pub fn client_config(roots: Option<rustls::RootCertStore>) -> quinn::ClientConfig {
    let tls = tls_config(roots, b"h3");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).expect("QUIC TLS");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// A TLS 1.3 client configuration offering `alpn`, trusting `roots`, or
/// any certificate when `None`.
pub fn tls_config(roots: Option<rustls::RootCertStore>, alpn: &[u8]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3");
    let mut tls = match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls
}

/// The roots holding one PEM certificate.
pub fn roots_of(pem: &str) -> rustls::RootCertStore {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .expect("a certificate");
    roots
}

/// An HTTP/3 connection.
#[derive(Clone)]
pub struct H3Conn {
    sender: Sender,
    authority: String,
    pub connection: quinn::Connection,
}

impl std::fmt::Debug for H3Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Conn")
            .field("authority", &self.authority)
            .finish()
    }
}

impl H3Conn {
    /// Connects `endpoint` to `to`, with SNI and `:authority` `host`; the
    /// connection's driver runs on a task of its own.
    pub async fn connect(endpoint: &quinn::Endpoint, to: SocketAddr, host: &str) -> Result<H3Conn, String> {
        let connection = endpoint
            .connect(to, host)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Conn {
            sender,
            authority: host.to_string(),
            connection,
        })
    }

    /// `GET path`: the status and the whole body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes), String> {
        let uri = format!("https://{}{path}", self.authority)
            .parse::<http::Uri>()
            .map_err(|e| e.to_string())?;
        self.get_uri(uri).await
    }

    /// `GET uri`, for a client that makes its URI once for many requests
    /// (the load client, as its HTTP/2 side does).
    pub async fn get_uri(&mut self, uri: http::Uri) -> Result<(u16, Bytes), String> {
        let request = http::Request::get(uri).body(()).map_err(|e| e.to_string())?;
        let mut stream = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        stream.finish().await.map_err(|e| e.to_string())?;
        let response = stream.recv_response().await.map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Ok((response.status().as_u16(), Bytes::from(body)))
    }
}

/// Accepts any server certificate: the load client measures, it does not
/// authenticate.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
