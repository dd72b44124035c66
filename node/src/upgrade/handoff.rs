//! The node's local socket's wire: a unix stream socket in the data dir
//! (mode 0600) carrying the upgrade conversation and reload requests; each
//! [`Message`] is a frame (a 4-byte big-endian length, then JSON), its
//! descriptors riding with the frame's first bytes as `SCM_RIGHTS`. Each
//! step has a deadline but the wait for `Serving`.

use super::sockets::Key;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};

/// Bumped when a message changes meaning; both sides must agree. (New
/// messages, such as `Reload`, are additive: a process that does not know
/// one closes the connection.)
pub const VERSION: u32 = 1;
/// Descriptors per frame (the kernel allows 253).
pub const BATCH: usize = 64;
/// Largest frame: a batch of keys in JSON fits many times over.
pub const MAX_FRAME: usize = 64 * 1024;

/// One step of the conversation (see [`super`] for the order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Message {
    /// New → old: which node of which cluster is asking.
    Hello {
        version: u32,
        cluster: String,
        node: u64,
    },
    /// Old → new: descriptors, one per key, in order; `more` until the last batch.
    Sockets { keys: Vec<Key>, more: bool },
    /// Either way: the conversation is over, and why.
    Refused { reason: String },
    /// New → old: every descriptor taken, ready to open the log.
    Ready,
    /// Old → new: Raft stopped and the log closed; it is yours.
    Released,
    /// New → old: serving every listener; stop accepting.
    Serving,
    /// `raftlb reload` → the running process: read this config file again.
    Reload { config: String },
    /// The running process → `raftlb reload`: what the reload did, line by
    /// line, and whether all of it took (or there was nothing to do).
    Reloaded { ok: bool, lines: Vec<String> },
}

impl Message {
    /// The message's name, for errors.
    pub fn step(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Sockets { .. } => "sockets",
            Message::Refused { .. } => "refused",
            Message::Ready => "ready",
            Message::Released => "released",
            Message::Serving => "serving",
            Message::Reload { .. } => "reload",
            Message::Reloaded { .. } => "reloaded",
        }
    }
}

/// Why the conversation broke.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("the upgrade socket: {0}")]
    Io(#[from] io::Error),
    #[error("the other process closed the upgrade socket")]
    Closed,
    #[error("no answer from the other process within {0:?}")]
    Timeout(Duration),
    #[error("the other process sent something not understood: {0}")]
    Garbled(String),
    #[error("the other process refused: {0}")]
    Refused(String),
    #[error("expected \"{expected}\", got \"{got}\"")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
}

/// Binds and listens on the upgrade socket at `path` (replacing a stale
/// one: the caller holds the data dir's lock), owner only.
pub fn listen(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}

/// One end of the conversation.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    deadline: Duration,
}

impl Channel {
    /// Connects to the upgrade socket at `path`.
    pub async fn connect(path: &Path, deadline: Duration) -> io::Result<Channel> {
        let stream = tokio::time::timeout(deadline, UnixStream::connect(path))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        Ok(Channel { stream, deadline })
    }

    /// A conversation on an accepted connection.
    pub async fn accept(listener: &UnixListener, deadline: Duration) -> io::Result<Channel> {
        let (stream, _) = listener.accept().await?;
        Ok(Channel { stream, deadline })
    }

    /// Sends `message` with `fds` attached.
    pub async fn send(&mut self, message: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), HandoffError> {
        let json = serde_json::to_vec(message).map_err(|e| HandoffError::Garbled(e.to_string()))?;
        let length = u32::try_from(json.len()).map_err(|_| HandoffError::Garbled("frame too long".into()))?;
        let mut frame = length.to_be_bytes().to_vec();
        frame.extend_from_slice(&json);
        let deadline = self.deadline;
        let stream = &mut self.stream;
        let sent = async {
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(io::Error::other(format!(
                    "{} descriptors do not fit one frame",
                    fds.len()
                )));
            }
            let written = stream
                .async_io(Interest::WRITABLE, || {
                    rustix::net::sendmsg(
                        stream.as_fd(),
                        &[IoSlice::new(&frame)],
                        &mut control,
                        SendFlags::NOSIGNAL,
                    )
                    .map_err(io::Error::from)
                })
                .await?;
            // The descriptors went with the first bytes; the rest may follow.
            stream.write_all(frame.get(written..).unwrap_or_default()).await
        };
        tokio::time::timeout(deadline, sent)
            .await
            .map_err(|_| HandoffError::Timeout(deadline))??;
        Ok(())
    }

    /// The process at the other end, as the kernel says: (pid, whether it
    /// runs as this process's user).
    pub fn peer(&self) -> io::Result<(u32, bool)> {
        let peer = rustix::net::sockopt::socket_peercred(&self.stream)?;
        let pid = peer.pid.as_raw_nonzero().get().unsigned_abs();
        Ok((pid, peer.uid == rustix::process::getuid()))
    }

    /// Receives the next message and the descriptors that came with it,
    /// waiting at most the deadline (`patient`: for as long as the other
    /// process lives).
    pub async fn recv(&mut self, patient: bool) -> Result<(Message, Vec<OwnedFd>), HandoffError> {
        let deadline = self.deadline;
        let received = self.read_frame();
        let (bytes, fds) = match patient {
            true => received.await?,
            false => tokio::time::timeout(deadline, received)
                .await
                .map_err(|_| HandoffError::Timeout(deadline))??,
        };
        match serde_json::from_slice(&bytes).map_err(|e| HandoffError::Garbled(e.to_string()))? {
            Message::Refused { reason } => Err(HandoffError::Refused(reason)),
            message => Ok((message, fds)),
        }
    }

    async fn read_frame(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>), HandoffError> {
        let stream = &mut self.stream;
        let mut header = [0u8; 4];
        let mut fds = Vec::new();
        let first = {
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = stream
                .async_io(Interest::READABLE, || {
                    rustix::net::recvmsg(
                        stream.as_fd(),
                        &mut [IoSliceMut::new(&mut header)],
                        &mut control,
                        RecvFlags::CMSG_CLOEXEC,
                    )
                    .map_err(io::Error::from)
                })
                .await?;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            if received.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
                return Err(HandoffError::Garbled("descriptors were cut off".into()));
            }
            received.bytes
        };
        if first == 0 {
            return Err(HandoffError::Closed);
        }
        if let Some(rest) = header.get_mut(first..) {
            stream.read_exact(rest).await.map_err(closed)?;
        }
        let length = u32::from_be_bytes(header) as usize;
        if length > MAX_FRAME {
            return Err(HandoffError::Garbled(format!("a frame of {length} bytes")));
        }
        let mut bytes = vec![0u8; length];
        stream.read_exact(&mut bytes).await.map_err(closed)?;
        Ok((bytes, fds))
    }

    /// Receives the next message, which must be `expected`.
    pub async fn expect(&mut self, expected: Message, patient: bool) -> Result<(), HandoffError> {
        let (got, _) = self.recv(patient).await?;
        match got == expected {
            true => Ok(()),
            false => Err(HandoffError::Unexpected {
                expected: expected.step(),
                got: got.step(),
            }),
        }
    }

    /// Tells the other side why the conversation ends here (best effort).
    pub async fn refuse(&mut self, reason: &str) {
        let refused = Message::Refused {
            reason: reason.to_string(),
        };
        let _ = self.send(&refused, &[]).await;
    }

    /// Sends every `(key, fd)` in batches of [`BATCH`].
    pub async fn send_sockets(&mut self, sockets: &[(Key, OwnedFd)]) -> Result<(), HandoffError> {
        let batches: Vec<&[(Key, OwnedFd)]> = sockets.chunks(BATCH).collect();
        let count = batches.len().max(1);
        for index in 0..count {
            let batch = batches.get(index).copied().unwrap_or_default();
            let keys = batch.iter().map(|(key, _)| *key).collect();
            let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|(_, fd)| fd.as_fd()).collect();
            let more = index + 1 < count;
            self.send(&Message::Sockets { keys, more }, &fds).await?;
        }
        Ok(())
    }

    /// Receives descriptors until the last batch, each with its key.
    pub async fn recv_sockets(&mut self) -> Result<Vec<(Key, OwnedFd)>, HandoffError> {
        let mut sockets = Vec::new();
        loop {
            match self.recv(false).await? {
                (Message::Sockets { keys, more }, fds) => {
                    if keys.len() != fds.len() {
                        return Err(HandoffError::Garbled(format!(
                            "{} keys came with {} descriptors",
                            keys.len(),
                            fds.len()
                        )));
                    }
                    sockets.extend(keys.into_iter().zip(fds));
                    if !more {
                        return Ok(sockets);
                    }
                }
                (got, _) => {
                    return Err(HandoffError::Unexpected {
                        expected: "sockets",
                        got: got.step(),
                    });
                }
            }
        }
    }
}

/// A closed connection in the middle of a frame.
fn closed(e: io::Error) -> HandoffError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => HandoffError::Closed,
        _ => HandoffError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::sockets::Kind;

    #[tokio::test]
    async fn descriptors_cross_in_batches_with_their_keys() {
        let dir = std::env::temp_dir().join(format!("raftlb-handoff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("up.sock");
        let listener = listen(&path).expect("listen");
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = UnixListener::from_std(listener).expect("tokio listener");
        let sockets: Vec<(Key, OwnedFd)> = (0..BATCH + 3)
            .map(|_| {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                let key = Key::new(Kind::Udp, socket.local_addr().expect("addr"));
                (key, OwnedFd::from(socket))
            })
            .collect();
        let expected: Vec<Key> = sockets.iter().map(|(k, _)| *k).collect();
        let deadline = Duration::from_secs(5);
        let client = tokio::spawn(async move {
            let mut channel = Channel::connect(&path, deadline).await.expect("connect");
            channel.send(&Message::Ready, &[]).await.expect("ready");
            let sockets = channel.recv_sockets().await.expect("sockets");
            let refused = channel.recv(false).await.expect_err("refused");
            (sockets, refused.to_string())
        });
        let mut server = Channel::accept(&listener, deadline).await.expect("accept");
        server.expect(Message::Ready, false).await.expect("ready");
        server.send_sockets(&sockets).await.expect("send");
        server.refuse("enough").await;
        let (received, refused) = client.await.expect("client");
        assert_eq!(refused, "the other process refused: enough");
        let keys: Vec<Key> = received.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, expected);
        for (key, fd) in received {
            let socket = std::net::UdpSocket::from(fd);
            assert_eq!(Some(socket.local_addr().expect("addr")), key.address);
        }
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
