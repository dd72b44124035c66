//! Keeps a node's [`Keyring`] current: its files are looked at every
//! second and whenever the process gets SIGHUP, and a changed certificate,
//! key or CA bundle is used for new connections at once (or refused, with
//! the file and the reason, keeping the old one). From
//! [`EXPIRY_WARNING`] before the node's certificate expires, a warning is
//! logged every [`WARN_EVERY`]; `/metrics` shows the expiry all along.

use super::keyring::Keyring;
use super::material::utc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_secs(1);
/// How long before expiry the warnings start.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
const WARN_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Seconds until `not_after` (negative once past).
pub fn seconds_left(not_after: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    not_after.saturating_sub(now)
}

/// Whether a certificate valid until `not_after` is within the warning window.
pub fn expires_soon(not_after: i64) -> bool {
    seconds_left(not_after) < i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX)
}

/// Runs until aborted.
pub fn start(keyring: Arc<Keyring>) -> JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; certificate files are still re-read every second");
                None
            }
        };
        let mut warned: Option<Instant> = None;
        loop {
            let material = keyring.material();
            if expires_soon(material.not_after) && warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                warned = Some(Instant::now());
                let id = material.identity.node_id().unwrap_or_default();
                tracing::warn!(
                    file = %keyring.files().cert.display(),
                    "this node's cluster certificate expires on {} ({} days left): renew it \
                     (raftlb certs node --id {id}) and replace the file; it is re-read without a restart",
                    utc(material.not_after),
                    seconds_left(material.not_after) / 86_400
                );
            }
            let forced = tokio::select! {
                () = tokio::time::sleep(POLL) => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let reloaded = if forced {
                keyring.reload().map(|()| true)
            } else {
                keyring.reload_if_changed()
            };
            match reloaded {
                Ok(true) => {
                    let material = keyring.material();
                    warned = None;
                    tracing::info!(
                        identity = %material.identity,
                        "cluster certificate files re-read; new connections use them (valid until {})",
                        utc(material.not_after)
                    );
                }
                Ok(false) => {}
                Err(e) => tracing::error!("cluster certificate files not used: {e}"),
            }
        }
    })
}
