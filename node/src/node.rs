//! Assembles one node: configuration → cluster view → data plane, then waits
//! for the stop signal and drains. Today the view is built from the file; the
//! control plane (Raft) will publish new views into the same `ArcSwap`.

use crate::dataplane::{DataPlane, StartError};
use crate::view::{ClusterView, SharedView};
use arc_swap::ArcSwap;
use raftlb_config::{Config, ConfigErrors};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

/// Reads and validates a configuration file.
pub fn load_config(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(raftlb_config::parse(&path.display().to_string(), &text)?)
}

/// Serves `config` on `workers` data-plane threads until `stop` completes,
/// then drains in-flight work for up to the node's drain timeout.
pub async fn run(config: Config, workers: usize, stop: impl Future<Output = ()>) -> Result<(), StartError> {
    let view: SharedView = Arc::new(ArcSwap::from_pointee(ClusterView::build(&config.cluster, None)));
    let dataplane = DataPlane::start(&config.cluster.listeners, view, workers)?;
    tracing::info!(
        node = config.node.id,
        listeners = config.cluster.listeners.len(),
        "raftlb node ready"
    );
    stop.await;
    tracing::info!(timeout = ?config.node.drain_timeout, "stopping: no new connections, draining");
    let open = dataplane.drain(config.node.drain_timeout).await;
    if open > 0 {
        tracing::warn!(open, "drain timeout reached; closing the remaining connections");
    } else {
        tracing::info!("drained; bye");
    }
    Ok(())
}

/// One data-plane worker per CPU the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// Completes on SIGINT or SIGTERM.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
