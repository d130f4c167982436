//! Group commit: one storage thread takes whole batches of waiting writes, makes each batch
//! durable at once (one fsync), then answers every writer. Thousands of acknowledged writes a
//! second cost a few fsyncs, and no actor or HTTP worker ever waits on the disk itself. The
//! store behind it (the node's, the frontend's) only says how to write one batch.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// Writes waiting for the storage thread before writers wait for room.
pub const MAX_QUEUED: usize = 4_096;
/// Most writes folded into one batch.
pub const MAX_BATCH: usize = 1_024;

struct Job<T, E> {
    write: Vec<T>,
    done: oneshot::Sender<Result<(), E>>,
}

/// The writers' side: cheap to clone. Each write is a list of items made durable together.
/// The storage thread ends once every handle is dropped, after its last batch.
pub struct Committer<T, E> {
    tx: mpsc::Sender<Job<T, E>>,
}

impl<T, E> Clone for Committer<T, E> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T, E> std::fmt::Debug for Committer<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, E: Clone + std::fmt::Display + Send + 'static> Committer<T, E> {
    /// Starts the storage thread `name`; `write_batch` makes one batch durable. A failed batch
    /// is logged here and answered to each of its writers.
    pub fn spawn(
        name: &str,
        mut write_batch: impl FnMut(&[Vec<T>]) -> Result<(), E> + Send + 'static,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (tx, mut rx) = mpsc::channel::<Job<T, E>>(MAX_QUEUED);
        let store = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let (writes, waiting): (Vec<Vec<T>>, Vec<_>) =
                        batch.into_iter().map(|j| (j.write, j.done)).unzip();
                    // A store that panics must not take the thread (and every later
                    // commit) with it: its writers hear that their commit failed.
                    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        write_batch(&writes)
                    }));
                    let Ok(result) = written else {
                        tracing::error!(store = %store, "a durable commit panicked; its writers are told it failed");
                        continue;
                    };
                    if let Err(e) = &result {
                        tracing::error!(store = %store, error = %e, "durable commit failed");
                    }
                    for done in waiting {
                        let _ = done.send(result.clone());
                    }
                }
            })?;
        Ok((Self { tx }, thread))
    }

    /// Makes `write` durable with whatever else is waiting; resolves once it is on disk, or with
    /// `stopped` if the storage thread is gone. An empty write is durable already. The future
    /// does not borrow the committer, so it can outlive the caller's borrow.
    pub fn commit(
        &self,
        write: Vec<T>,
        stopped: E,
    ) -> impl Future<Output = Result<(), E>> + 'static {
        let tx = self.tx.clone();
        async move {
            if write.is_empty() {
                return Ok(());
            }
            let (done, wait) = oneshot::channel();
            if tx.send(Job { write, done }).await.is_err() {
                return Err(stopped);
            }
            wait.await.unwrap_or(Err(stopped))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn concurrent_writes_share_batches_and_all_get_their_answer() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let (committer, thread) = Committer::<u32, String>::spawn("test-store", move |writes| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            seen.lock().unwrap().push(writes.len());
            if writes.iter().flatten().any(|w| *w == 13) {
                Err("unlucky".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let results = runtime.block_on(futures::future::join_all(
            (0..100).map(|i| committer.commit(vec![i], "stopped".into())),
        ));
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count()
                + results.iter().filter(|r| r.is_err()).count(),
            100
        );
        assert!(
            results[13].is_err(),
            "the batch holding 13 failed, and 13's writer hears it"
        );
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 100);
        assert!(batches.len() < 100, "writes were grouped: {batches:?}");
        drop(committer);
        thread.join().unwrap();
    }

    #[test]
    fn a_batch_that_panics_fails_its_writers_and_the_thread_goes_on() {
        let (committer, thread) = Committer::<u32, String>::spawn("test-store", |writes| {
            if writes.iter().flatten().any(|w| *w == 13) {
                panic!("the engine asserted");
            }
            Ok(())
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let failed = runtime.block_on(committer.commit(vec![13], "stopped".into()));
        assert_eq!(failed, Err("stopped".into()));
        let next = runtime.block_on(committer.commit(vec![1], "stopped".into()));
        assert_eq!(next, Ok(()), "the storage thread still commits");
        drop(committer);
        thread.join().unwrap();
    }
}
