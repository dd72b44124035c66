//! `raftlb demo`: a node and three small HTTP backends on loopback, so a
//! newcomer sees balancing with one command and no root. Each backend answers
//! every request with its own name (`backend-1`, …).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use raftlb_config::Config;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub const BACKENDS: u16 = 3;

/// The demo's configuration, as the TOML an operator would write.
pub fn config_text(listen: SocketAddr, first_backend_port: u16) -> String {
    let backends: Vec<String> = (0..BACKENDS)
        .map(|i| format!("  {{ address = \"127.0.0.1:{}\" }},", first_backend_port + i))
        .collect();
    format!(
        "[node]\nid = 1\ndrain_timeout = \"2s\"\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{listen}\"\npool = \"demo\"\n\n[[pool]]\nname = \"demo\"\nalgorithm = \"round_robin\"\nbackends = [\n{}\n]\n",
        backends.join("\n")
    )
}

pub fn config(listen: SocketAddr, first_backend_port: u16) -> Result<Config, raftlb_config::ConfigErrors> {
    raftlb_config::parse("<demo>", &config_text(listen, first_backend_port))
}

/// Binds the demo backends and serves them in the background.
pub async fn start_backends(first_port: u16) -> std::io::Result<()> {
    for i in 0..BACKENDS {
        let address: SocketAddr = ([127, 0, 0, 1], first_port + i).into();
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("demo backend on {address}: {e}")))?;
        let name = Bytes::from(format!("backend-{}\n", i + 1));
        tokio::spawn(serve_backend(listener, name));
    }
    Ok(())
}

async fn serve_backend(listener: TcpListener, name: Bytes) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request: hyper::Request<Incoming>| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(name))) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
