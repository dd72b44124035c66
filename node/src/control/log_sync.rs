//! Making the Raft log's writes durable off the control runtime: one thread
//! per log that fsyncs (`fdatasync`) what appends and truncations wrote and
//! then tells their waiters, in the order they were written. Writes that
//! arrive while it syncs share the next sync (group commit), so a busy
//! leader pays one disk flush for many batches, and the one control thread
//! never waits for the disk (openraft's `append` returns once the entries
//! are readable; its callback fires here, once they are durable).

use super::types::TypeConfig;
use openraft::storage::LogFlushed;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Who waits for a write to be durable.
pub enum Waiter {
    /// openraft, for an append.
    Append(LogFlushed<TypeConfig>),
    /// A task of ours, for a truncation.
    Task(oneshot::Sender<io::Result<()>>),
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Append(_) => "Waiter::Append",
            Waiter::Task(_) => "Waiter::Task",
        })
    }
}

struct Job {
    file: Arc<File>,
    waiter: Waiter,
}

/// The handle to a log's sync thread; the thread ends with the last one.
#[derive(Clone)]
pub struct Syncer {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Syncer")
    }
}

impl Syncer {
    pub fn start() -> io::Result<Syncer> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("raftlb-log-sync".into())
            .spawn(move || run(&queue))?;
        Ok(Syncer { jobs })
    }

    /// Tells `waiter` once everything written to `file` so far is durable.
    pub fn after(&self, file: Arc<File>, waiter: Waiter) {
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job { file, waiter }) {
            complete(
                job.waiter,
                Err(io::Error::other("the log's sync thread has stopped")),
            );
        }
    }

    /// Waits until everything written to `file` so far is durable.
    pub async fn sync(&self, file: Arc<File>) -> io::Result<()> {
        let (done, result) = oneshot::channel();
        self.after(file, Waiter::Task(done));
        result
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the log's sync thread has stopped")))
    }
}

/// A sync's outcome, kept to hand to every job of its file.
type SyncResult = Result<(), (io::ErrorKind, String)>;

fn run(queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        jobs.extend(queue.try_iter());
        // One fsync per file (after a purge's rewrite, two files may be
        // pending); each job gets its own file's result.
        let mut synced: Vec<(Arc<File>, SyncResult)> = Vec::new();
        for job in jobs {
            let result = match synced.iter().find(|(file, _)| Arc::ptr_eq(file, &job.file)) {
                Some((_, result)) => result.clone(),
                None => {
                    let result = job.file.sync_data().map_err(|e| (e.kind(), e.to_string()));
                    synced.push((Arc::clone(&job.file), result.clone()));
                    result
                }
            };
            complete(
                job.waiter,
                result.map_err(|(kind, text)| io::Error::new(kind, text)),
            );
        }
    }
}

fn complete(waiter: Waiter, result: io::Result<()>) {
    match waiter {
        Waiter::Append(callback) => callback.log_io_completed(result),
        Waiter::Task(done) => drop(done.send(result)),
    }
}
