//! The HTTP side facing clients: one hyper connection per accepted socket,
//! HTTP/1.1 or HTTP/2 with prior knowledge (told apart by the connection
//! preface), with the listener's limits set explicitly: head size and header
//! count (431 beyond them), head read timeout. Malformed requests are
//! answered 400 by hyper's parser. On shutdown a connection finishes the
//! request in flight and closes.

use super::headers::Forwarding;
use super::proxy::{self, ConnContext};
use crate::dataplane::Shutdown;
use crate::view::SharedView;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use raftlb_config::HttpLimits;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// What every connection of one HTTP listener shares.
#[derive(Debug)]
pub struct HttpListener {
    name: String,
    view: SharedView,
    /// `http` or `https`, for `X-Forwarded-Proto` and `Forwarded`.
    scheme: &'static str,
    builder: auto::Builder<TokioExecutor>,
}

impl HttpListener {
    pub fn new(name: &str, limits: &HttpLimits, view: SharedView, scheme: &'static str) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        HttpListener {
            name: name.to_string(),
            view,
            scheme,
            builder,
        }
    }

    /// Serves one client connection until it closes or shutdown drains it.
    pub async fn serve<S>(self: Arc<Self>, stream: S, client: SocketAddr, shutdown: Shutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let context = Arc::new(ConnContext {
            listener: self.name.clone(),
            client,
            forwarding: Forwarding::new(client, self.scheme),
            view: Arc::clone(&self.view),
        });
        let service = service_fn(move |request| {
            let context = Arc::clone(&context);
            async move { Ok::<_, Infallible>(proxy::handle(request, context).await) }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.token.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = %self.name, %client, error = %e, "HTTP connection ended with an error");
        }
    }
}
