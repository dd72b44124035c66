//! The access log's writer: a thread of its own, fed through a bounded
//! channel, so a request never waits for the disk. A full channel drops
//! the record and counts it. The thread wakes every [`TICK`], formats what
//! has arrived and writes it in one go; senders never wake it, so a
//! request pays no system call for its line. The file is opened for
//! appending and opened again on request (SIGUSR1, after logrotate moved
//! it).

use super::format;
use super::record::Record;
use raftlb_config::AccessLogFormat;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

/// Records waiting to be written, at most.
const CAPACITY: usize = 8192;
/// Formatted text written at once, at most.
const BATCH_BYTES: usize = 64 * 1024;
/// How long the thread sleeps once it has written everything.
const TICK: Duration = Duration::from_millis(5);

/// Records dropped because the writer fell behind.
static DROPPED: AtomicU64 = AtomicU64::new(0);

pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

enum Message {
    Record(Box<Record>),
    /// Answer once everything sent before is written.
    Flush(mpsc::Sender<()>),
}

/// The sending side, shared by every worker.
#[derive(Debug)]
pub struct Writer {
    sender: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl Writer {
    /// Opens `path` (stderr if `None`) and starts the thread writing there.
    pub fn start(format: AccessLogFormat, path: Option<&str>) -> io::Result<Writer> {
        let path = path.map(PathBuf::from);
        let output = match &path {
            Some(path) => Output::File(open(path)?),
            None => Output::Stderr,
        };
        let (sender, receiver) = mpsc::sync_channel(CAPACITY);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reopen);
        std::thread::Builder::new()
            .name("raftlb-access-log".to_string())
            .spawn(move || run(receiver, format, path, output, &flag))?;
        Ok(Writer { sender, reopen })
    }

    /// Hands `record` to the thread, or drops and counts it if it is behind.
    pub fn send(&self, record: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sender.try_send(Message::Record(Box::new(record)))
        {
            DROPPED.fetch_add(1, Relaxed);
        }
    }

    /// Asks the thread to open its file again before its next write.
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
    }

    /// Waits up to `timeout` for what was sent so far to be written.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (done, written) = mpsc::channel();
        let mut message = Message::Flush(done);
        loop {
            match self.sender.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

enum Output {
    File(File),
    Stderr,
}

impl Output {
    fn write(&mut self, text: &str) -> io::Result<()> {
        match self {
            Output::File(file) => file.write_all(text.as_bytes()),
            Output::Stderr => io::stderr().lock().write_all(text.as_bytes()),
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn run(
    receiver: Receiver<Message>,
    format: AccessLogFormat,
    path: Option<PathBuf>,
    mut output: Output,
    reopen: &AtomicBool,
) {
    let write_one = match format {
        AccessLogFormat::Combined => format::combined,
        AccessLogFormat::Json => format::json,
    };
    let mut text = String::with_capacity(BATCH_BYTES * 2);
    let mut failing = false;
    let mut flushed = Vec::new();
    loop {
        let (mut gone, mut drained) = (false, false);
        loop {
            match receiver.try_recv() {
                Ok(Message::Record(record)) => write_one(&record, &mut text),
                Ok(Message::Flush(done)) => flushed.push(done),
                Err(TryRecvError::Empty) => {
                    drained = true;
                    break;
                }
                Err(TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
            if text.len() >= BATCH_BYTES || reopen.load(Relaxed) {
                break;
            }
        }
        if !text.is_empty() {
            match output.write(&text) {
                Err(e) if !failing => {
                    tracing::error!(error = %e, "cannot write the access log; lines are lost until it can");
                    failing = true;
                }
                Err(_) => {}
                Ok(()) => failing = false,
            }
            text.clear();
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
        if reopen.swap(false, Relaxed)
            && let Some(path) = &path
        {
            match open(path) {
                Ok(file) => {
                    output = Output::File(file);
                    tracing::info!(file = %path.display(), "access log reopened");
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot reopen the access log; still writing to the old file")
                }
            }
        }
        if gone {
            return;
        }
        if drained {
            std::thread::sleep(TICK);
        }
    }
}
