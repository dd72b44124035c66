//! The access log: one [`Record`] per HTTP request and L4 connection,
//! finished when it ends, counted in its listener's and pool's traffic
//! and, on listeners with `access_log = true`, written as one line.
//! With `[node] access_log`, lines go in its `format` to its `path` (or
//! stderr) through a [`writer`] thread, off the data plane: when that
//! falls behind, lines are dropped and counted
//! (`raftlb_access_log_dropped_total`), never waited for; SIGUSR1 opens the
//! file again (logrotate). Without it, HTTP requests go to the ordinary
//! log, target `raftlb::access`, as they always did.

mod format;
pub mod record;
mod writer;

pub use record::{Record, StickyOutcome, TlsInfo};

use raftlb_config::AccessLogSpec;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use writer::Writer;

/// The node's writer, once [`start`] set one up.
static WRITER: OnceLock<Writer> = OnceLock::new();

/// `[node] access_log.path` could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{file}: [node] access_log.path: cannot open \"{path}\" for appending: {source}")]
pub struct OpenError {
    file: String,
    path: String,
    source: std::io::Error,
}

/// Starts writing the access log as `spec` says (nothing to start without
/// one); `config_file` names the file in errors.
pub fn start(spec: Option<&AccessLogSpec>, config_file: &Path) -> Result<(), OpenError> {
    let Some(spec) = spec else { return Ok(()) };
    let writer = Writer::start(spec.format, spec.path.as_deref()).map_err(|source| OpenError {
        file: config_file.display().to_string(),
        path: spec.path.clone().unwrap_or_else(|| "-".to_string()),
        source,
    })?;
    // A second start in one process (never done) keeps the first writer.
    let _ = WRITER.set(writer);
    Ok(())
}

/// Records dropped because the writer fell behind.
pub fn dropped() -> u64 {
    writer::dropped()
}

/// Waits up to `timeout` for the lines of every finished record to be written.
pub fn flush(timeout: Duration) {
    if let Some(writer) = WRITER.get() {
        writer.flush(timeout);
    }
}

/// Opens the access log file again on every SIGUSR1, for the life of the
/// process (without a handler, SIGUSR1 would end it).
pub fn reopen_on_sigusr1() -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Watched from now, not from the task's first poll.
    let usr1 = signal(SignalKind::user_defined1());
    tokio::spawn(async move {
        let mut usr1 = match usr1 {
            Ok(usr1) => usr1,
            Err(e) => {
                return tracing::warn!(error = %e, "cannot watch SIGUSR1; the access log is not reopened");
            }
        };
        while usr1.recv().await.is_some() {
            match WRITER.get() {
                Some(writer) => writer.reopen(),
                None => tracing::info!("SIGUSR1: no [node] access_log file to reopen"),
            }
        }
    })
}

/// Writes a finished record's line where it goes.
fn log(record: Record) {
    match WRITER.get() {
        Some(writer) => writer.send(record),
        None => ordinary_log(&record),
    }
}

/// The line of an HTTP request in the ordinary log (L4 connections are
/// not logged there).
fn ordinary_log(record: &Record) {
    let Some(request) = &record.request else {
        return;
    };
    tracing::info!(
        target: "raftlb::access",
        listener = %record.listener.spec.name,
        client = %record.client,
        method = %request.method,
        path = request.target.path(),
        status = record.status.unwrap_or(0),
        backend = record.backend.map(|b| b.to_string()).unwrap_or_else(|| "-".to_string()),
        ms = format_args!("{:.3}", record.total.as_secs_f64() * 1e3),
        rid = ?request.id,
    );
}
