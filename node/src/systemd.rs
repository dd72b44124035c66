//! systemd's service protocol (`sd_notify(3)`), without libsystemd: one
//! datagram per message to the socket `$NOTIFY_SOCKET` names (a path, or an
//! abstract name written `@name`). What raftlb says, with `Type=notify`:
//!
//! - `READY=1` once [`Readiness::Ready`](crate::readiness::Readiness): every
//!   listener bound and the cluster joined; a successor that took over in
//!   place says `MAINPID=` first, so systemd follows it (`NotifyAccess=all`);
//! - `STOPPING=1` when it starts to drain (not when it hands over: the
//!   successor is the service now);
//! - `STATUS=` with each readiness change, for `systemctl status`;
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC`, only after Raft's core has
//!   answered a question within that time: a wedged control plane stops
//!   the pings and systemd restarts the service.
//!
//! Without `$NOTIFY_SOCKET` every call does nothing.

use crate::control::types::Raft;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<PathBuf>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for (none if unset or empty).
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }
    }

    /// Sends `state` (`KEY=VALUE` lines); a failure is logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(e) = send(socket, state) {
            tracing::warn!(socket = %socket.display(), error = %e, "cannot notify systemd");
        }
    }

    /// How often systemd wants `WATCHDOG=1`, if it does: `$WATCHDOG_USEC`,
    /// for this process (`$WATCHDOG_PID`, when set, must be it — unless
    /// `successor`: a process that took over in place inherited its
    /// predecessor's environment and is the main process now).
    pub fn watchdog_interval(&self, successor: bool) -> Option<Duration> {
        self.socket.as_ref()?;
        if !successor
            && let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse() != Ok(std::process::id())
        {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec))
    }

    /// Pings the watchdog every half `interval` while Raft's core answers
    /// within that half; runs until aborted.
    pub fn spawn_watchdog(&self, interval: Duration, raft: Raft) -> tokio::task::JoinHandle<()> {
        let notifier = self.clone();
        let period = interval / 2;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match tokio::time::timeout(period, raft.with_raft_state(|_| ())).await {
                    Ok(Ok(())) => notifier.notify("WATCHDOG=1"),
                    Ok(Err(fatal)) => tracing::error!(%fatal, "Raft has stopped: no watchdog ping"),
                    Err(_) => {
                        tracing::error!(?period, "Raft's core did not answer in time: no watchdog ping")
                    }
                }
            }
        })
    }
}

fn send(socket: &std::path::Path, state: &str) -> std::io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_encoded_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            datagram.send_to(state.as_bytes(), socket)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket_and_nothing_is_sent_without_one() {
        let path = std::env::temp_dir().join(format!("raftlb-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some(path.clone()),
        };
        notifier.notify("READY=1\nSTATUS=ready");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ready");
        Notifier::default().notify("READY=1");
        assert_eq!(Notifier::default().watchdog_interval(false), None);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn abstract_names_are_reached() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("raftlb-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = Notifier {
            socket: Some(PathBuf::from(format!("@{name}"))),
        };
        notifier.notify("STOPPING=1");
        let mut buf = [0u8; 16];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
