//! TLS for `https` listeners (rustls, ring provider): the cluster's
//! certificates parsed once per view ([`Certificates`]), picked per
//! handshake by SNI (exact name, then wildcard, then the listener's
//! default), and one rustls server configuration per listener
//! ([`server_config`]) offering TLS 1.3 and 1.2, ALPN `h2` and
//! `http/1.1`, and session resumption (a session cache and tickets).
//! Because the resolver reads the current view at each handshake, a
//! certificate committed through Raft is served by every node at once,
//! with no restart and no lost session cache.
//!
//! - [`backend`]: TLS from the balancer to a pool's backends.
//! - [`seed`]: `[[certificate]]` files, stored in the cluster at start.
//! - [`parse`]: PEM → a certified key with its names and validity, with an
//!   error an operator can act on (`ctl cert add` checks with it too).

pub mod backend;
pub mod parse;
pub mod seed;

use crate::view::SharedView;
use parse::Parsed;
use raftlb_config::Certificate;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The cluster's certificates, usable by rustls, indexed by the names
/// they are valid for.
#[derive(Debug, Default)]
pub struct Certificates {
    by_name: BTreeMap<String, Arc<CertifiedKey>>,
    /// DNS name (lower case) → certificate name; wildcards as `*.suffix`.
    exact: HashMap<String, String>,
    wildcard: HashMap<String, String>,
}

impl Certificates {
    /// Parses every certificate; one that does not parse is left out and
    /// logged (`ctl cert add` refuses those, so this is a corrupt state).
    pub fn build(certificates: &BTreeMap<String, Certificate>) -> Certificates {
        let mut built = Certificates::default();
        for (name, certificate) in certificates {
            let parsed: Parsed = match parse::parse(certificate) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::error!(certificate = %name, error = %e, "certificate not served");
                    continue;
                }
            };
            for dns in &parsed.names {
                let dns = dns.to_ascii_lowercase();
                match dns.strip_prefix("*.") {
                    Some(suffix) => built.wildcard.entry(suffix.to_string()),
                    None => built.exact.entry(dns),
                }
                .or_insert_with(|| name.clone());
            }
            built.by_name.insert(name.clone(), Arc::new(parsed.key));
        }
        built
    }

    /// The certificate for a client that asked for `sni` (if it sent one).
    pub fn pick(&self, sni: Option<&str>, default: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let named = sni.map(str::to_ascii_lowercase).and_then(|sni| {
            self.exact
                .get(&sni)
                .or_else(|| {
                    sni.split_once('.')
                        .and_then(|(_, parent)| self.wildcard.get(parent))
                })
                .cloned()
        });
        // No SNI (an IP address), or one no certificate covers: the
        // default, else the first certificate by name.
        named
            .or_else(|| default.map(str::to_string))
            .and_then(|name| self.by_name.get(&name).cloned())
            .or_else(|| self.by_name.values().next().cloned())
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Picks a listener's certificate from the current view at each handshake.
#[derive(Debug)]
struct ViewResolver {
    view: SharedView,
    default: Option<String>,
}

impl ResolvesServerCert for ViewResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let view = self.view.load();
        let picked = view
            .certificates()
            .pick(hello.server_name(), self.default.as_deref());
        if picked.is_none() {
            tracing::warn!(sni = ?hello.server_name(), "no certificate to offer; handshake refused");
        }
        picked
    }
}

/// The rustls configuration of one `https` listener.
pub fn server_config(view: SharedView, default: Option<String>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ViewResolver { view, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(64 * 1024);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// The rustls configuration of one `https` listener's HTTP/3: the same
/// certificates, TLS 1.3 only (QUIC's), ALPN `h3`, and 0-RTT if
/// `early_data` (QUIC allows an early-data limit of 0 or all). With 0-RTT,
/// sessions resume only from this process's cache, which hands each
/// ticket out once (rustls accepts early data only so): stateless tickets
/// would let a recorded 0-RTT flight be replayed at will.
pub fn quic_server_config(
    view: SharedView,
    default: Option<String>,
    early_data: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ViewResolver { view, default }));
    config.alpn_protocols = vec![b"h3".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(64 * 1024);
    match early_data {
        true => config.max_early_data_size = u32::MAX,
        false => config.ticketer = rustls::crypto::ring::Ticketer::new()?,
    }
    Ok(Arc::new(config))
}
