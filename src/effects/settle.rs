//! Effects marked done in batches: the attempts that end while the writers are busy
//! share one statement and one commit, instead of a transaction each.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::Database;
use crate::db::effects::Fence;

/// Completions written with one statement at most.
const MAX_BATCH: usize = 256;
/// Completions waiting for the writer before an attempt waits for room; the dispatcher
/// runs a bounded number of attempts, so this is never reached in practice.
const QUEUE_DEPTH: usize = 1024;
/// Batches written at once: alone, a completion is written at once, as a transaction of
/// its own would be; when every writer is busy, those that end meanwhile wait together.
const WRITERS: usize = 4;

type Pending = (Fence, oneshot::Sender<Result<bool, String>>);
type Queue = Arc<Mutex<mpsc::Receiver<Pending>>>;

/// A handle to the writers of completions; cheap to clone.
#[derive(Clone)]
pub struct Completions {
    queue: mpsc::Sender<Pending>,
}

impl Completions {
    /// Starts the writers on the current runtime; they stop when the last handle is gone.
    pub fn start(db: Database) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        let pending: Queue = Arc::new(Mutex::new(pending));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(db.clone(), Arc::clone(&pending)));
        }
        Self { queue }
    }

    /// Marks an effect done, with whatever other completions are waiting, and returns once
    /// that is committed (a crash of fulfilld cannot undo it; see `complete_effects`). False when the lease is no longer the attempt's. The write is a
    /// task of its own: a caller that goes away does not cut it short.
    pub async fn complete(&self, fence: Fence) -> anyhow::Result<bool> {
        let (reply, done) = oneshot::channel();
        if self.queue.send((fence, reply)).await.is_err() {
            anyhow::bail!("the effect completion writer has stopped");
        }
        done.await
            .map_err(|_| anyhow::anyhow!("the effect completion writer has stopped"))?
            .map_err(anyhow::Error::msg)
    }
}

/// One writer: takes what is waiting, up to [`MAX_BATCH`], writes it at once, and answers
/// each caller once the batch is committed (or failed).
async fn write_batches(db: Database, pending: Queue) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.lock().await.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (fences, replies): (Vec<Fence>, Vec<_>) = batch.drain(..).unzip();
        let done = match complete(&db, fences.clone()).await {
            Ok(done) => done.into_iter().map(Ok).collect(),
            // Not one lost attempt's work for each failure: what the batch could not do
            // is tried once more, a fence at a time (on a fresh connection if the last
            // one broke), before a caller is told; the fenced update may run again safely.
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), effects = fences.len(), "could not mark effects done; trying each once more");
                let mut done = Vec::with_capacity(fences.len());
                for fence in fences {
                    done.push(match complete(&db, vec![fence]).await {
                        Ok(one) => Ok(one.first().copied().unwrap_or(false)),
                        Err(error) => Err(format!("{error:#}")),
                    });
                }
                done
            }
        };
        for (reply, done) in replies.into_iter().zip(done) {
            let _ = reply.send(done);
        }
    }
}

/// Writes one batch in a task of its own, so that a panic fails the batch, not the
/// writer.
async fn complete(db: &Database, fences: Vec<Fence>) -> anyhow::Result<Vec<bool>> {
    let db = db.clone();
    tokio::spawn(async move { db.complete_effects(&fences).await })
        .await
        .map_err(|e| anyhow::anyhow!("marking effects done failed: {e}"))?
}
