//! The wire under the Raft and admin gRPC services, both ways.
//!
//! Answering: [`accept`] takes connections on the node's Raft address and
//! hands tonic only those that completed a TLS 1.3 handshake with a client
//! certificate of the cluster's CA (or, with `insecure_cleartext`, every
//! connection). Each handshake runs on its own task with a deadline, so a
//! slow or silent client holds up nobody; at most [`MAX_CONNECTIONS`] are
//! open at once (more wait in the backlog), and an accept error such as
//! EMFILE backs off instead of spinning. Every accepted connection carries
//! a [`Caller`] (address and certificate identity) to the calls made on it.
//!
//! Dialling: a [`Dialer`] makes tonic channels that connect over TLS with
//! this node's (or `raftlb ctl`'s) certificate, expecting a given node, or
//! any node, of the same cluster at the other end.

use super::authz;
use crate::pki::{Expect, Identity, Keyring, explain};
use futures_util::Stream;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::either::Either;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

/// Connections the Raft and admin port keeps open at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause after a failed accept (EMFILE, ENFILE, ENOBUFS …).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How this side secures its cluster links.
#[derive(Debug, Clone)]
pub enum Links {
    /// Mutual TLS with this identity.
    Tls(Arc<Keyring>),
    /// `insecure_cleartext = true` (loopback only): no TLS, no identity.
    Cleartext,
}

/// Who is at the other end of a connection this node accepted.
#[derive(Debug, Clone)]
pub struct Caller {
    pub address: Option<SocketAddr>,
    pub peer: Peer,
}

/// What the other end's certificate says.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A cleartext cluster: nobody is identified, everyone is trusted.
    Cleartext,
    /// A certificate of the cluster's CA with a raftlb identity.
    Certified(Identity),
    /// A certificate of the CA without a usable identity, and why.
    Unidentified(String),
}

impl Caller {
    /// The caller of `request`: what the connection's handshake found.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Caller> {
        request.extensions().get::<Caller>()
    }
}

/// An accepted connection, ready for HTTP/2.
pub struct PeerStream {
    io: Io,
    caller: Caller,
    /// Held while the connection is open: counts towards [`MAX_CONNECTIONS`].
    _permit: OwnedSemaphorePermit,
}

type Io = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

impl std::fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStream")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

impl Connected for PeerStream {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Accepts on `listener` until the returned stream is dropped; yields the
/// connections whose handshake succeeded.
pub fn accept(
    listener: TcpListener,
    links: Links,
) -> Result<impl Stream<Item = Result<PeerStream, io::Error>>, rustls::Error> {
    let acceptor = match &links {
        Links::Tls(keyring) => Some(TlsAcceptor::from(keyring.server_config()?)),
        Links::Cleartext => None,
    };
    let (ready, incoming) = mpsc::channel::<PeerStream>(64);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(5);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = ready.closed() => return,
            };
            let (tcp, address) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        authz::log_refusal(None, &format!("accept failed: {e}; pausing {backoff:?}"));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                        continue;
                    }
                },
                () = ready.closed() => return,
            };
            backoff = Duration::from_millis(5);
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let stream = match acceptor {
                    None => PeerStream {
                        io: Either::Left(tcp),
                        caller: Caller {
                            address: Some(address),
                            peer: Peer::Cleartext,
                        },
                        _permit: permit,
                    },
                    Some(acceptor) => match handshake(&acceptor, tcp, address).await {
                        Some((tls, peer)) => PeerStream {
                            io: Either::Right(Box::new(tls)),
                            caller: Caller {
                                address: Some(address),
                                peer,
                            },
                            _permit: permit,
                        },
                        None => return,
                    },
                };
                let _ = ready.send(stream).await;
            });
        }
    });
    Ok(futures_util::stream::unfold(
        incoming,
        |mut incoming| async move {
            incoming
                .recv()
                .await
                .map(|stream| (Ok::<_, io::Error>(stream), incoming))
        },
    ))
}

/// Completes the server side of a handshake; `None` (logged) if it failed.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    address: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Peer)> {
    let failed = |reason: String| {
        authz::log_refusal(
            Some(address.ip()),
            &format!("TLS handshake from {} failed: {reason}", address.ip()),
        );
        None
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = explain::tls_error(&e).map_or_else(|| e.to_string(), explain::answering);
            return failed(reason);
        }
        Err(_) => return failed(format!("no complete handshake within {HANDSHAKE_TIMEOUT:?}")),
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first().cloned());
    let peer = match leaf {
        Some(leaf) => match Identity::of_certificate(&leaf) {
            Ok(identity) => Peer::Certified(identity),
            Err(reason) => Peer::Unidentified(reason),
        },
        // Required by the verifier; kept total all the same.
        None => Peer::Unidentified("it sent no certificate".to_string()),
    };
    Some((tls, peer))
}

/// Makes gRPC channels to other nodes (or, for `raftlb ctl`, to any node).
#[derive(Debug, Clone)]
pub struct Dialer {
    links: Links,
    connect_timeout: Duration,
}

impl Dialer {
    pub fn new(links: Links, connect_timeout: Duration) -> Dialer {
        Dialer {
            links,
            connect_timeout,
        }
    }

    fn endpoint(&self, address: &str) -> Result<Endpoint, String> {
        Endpoint::from_shared(format!("http://{address}"))
            .map(|e| e.tcp_nodelay(true))
            .map_err(|e| format!("invalid node address \"{address}\": {e}"))
    }

    /// A channel that connects on first use and reconnects by itself.
    pub fn lazy(&self, address: &str, expect: Expect) -> Result<Channel, String> {
        let endpoint = self.endpoint(address)?;
        Ok(endpoint.connect_with_connector_lazy(self.connector(address, expect)?))
    }

    /// A channel connected now (its errors are the connection's).
    pub async fn connect(&self, address: &str, expect: Expect) -> Result<Channel, ConnectError> {
        let endpoint = self.endpoint(address).map_err(ConnectError::Address)?;
        let connector = self.connector(address, expect).map_err(ConnectError::Address)?;
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(ConnectError::Transport)
    }

    fn connector(
        &self,
        address: &str,
        expect: Expect,
    ) -> Result<
        impl tower::Service<
            http::Uri,
            Response = hyper_util::rt::TokioIo<Dialled>,
            Error = io::Error,
            Future = impl Future<Output = io::Result<hyper_util::rt::TokioIo<Dialled>>> + Send,
        > + Clone
        + Send
        + 'static,
        String,
    > {
        let tls = match &self.links {
            Links::Tls(keyring) => Some(TlsConnector::from(
                keyring
                    .client_config(expect)
                    .map_err(|e| format!("cannot set up TLS: {e}"))?,
            )),
            Links::Cleartext => None,
        };
        let address: Arc<str> = address.into();
        let within = self.connect_timeout;
        Ok(tower::service_fn(move |_uri: http::Uri| {
            let tls = tls.clone();
            let address = Arc::clone(&address);
            async move {
                let dial = async {
                    let tcp = TcpStream::connect(&*address).await?;
                    tcp.set_nodelay(true)?;
                    let Some(tls) = tls else {
                        return Ok(Either::Left(tcp));
                    };
                    // Nodes are known by the identity in their certificate,
                    // not by name: the name only has to be well formed.
                    let name = rustls::pki_types::ServerName::IpAddress(tcp.peer_addr()?.ip().into());
                    match tls.connect(name, tcp).await {
                        Ok(stream) => Ok(Either::Right(Box::new(stream))),
                        Err(e) => Err(match explain::tls_error(&e) {
                            Some(tls_error) => io::Error::other(explain::dialling(tls_error)),
                            None => e,
                        }),
                    }
                };
                match tokio::time::timeout(within, dial).await {
                    Ok(dialled) => dialled.map(hyper_util::rt::TokioIo::new),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no connection within {within:?}"),
                    )),
                }
            }
        }))
    }
}

/// Why [`Dialer::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Address(String),
    #[error(transparent)]
    Transport(tonic::transport::Error),
}

/// A connection this side dialled.
pub type Dialled = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;
