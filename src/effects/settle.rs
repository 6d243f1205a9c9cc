//! Effects marked done in batches: the attempts that end together share one statement
//! and one commit, instead of a transaction each.

use tokio::sync::{mpsc, oneshot};

use crate::db::Database;
use crate::db::effects::Fence;

/// Completions written with one statement at most.
const MAX_BATCH: usize = 256;
/// Completions waiting for the writer before an attempt waits for room; the dispatcher
/// runs a bounded number of attempts, so this is never reached in practice.
const QUEUE_DEPTH: usize = 1024;

type Pending = (Fence, oneshot::Sender<Result<bool, String>>);

/// A handle to the writer of completions; cheap to clone.
#[derive(Clone)]
pub struct Completions {
    queue: mpsc::Sender<Pending>,
}

impl Completions {
    /// Starts the writer on the current runtime; it stops when the last handle is gone.
    pub fn start(db: Database) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_batches(db, pending));
        Self { queue }
    }

    /// Marks an effect done, with whatever other completions are waiting, and returns once
    /// that is durable. False when the lease is no longer the attempt's. The write is a
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

/// Takes what is waiting, up to [`MAX_BATCH`], writes it at once, and answers each
/// caller once the batch is durable (or failed).
async fn write_batches(db: Database, mut pending: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (fences, replies): (Vec<Fence>, Vec<_>) = batch.drain(..).unzip();
        match db.complete_effects(&fences).await {
            Ok(done) => {
                for (reply, done) in replies.into_iter().zip(done) {
                    let _ = reply.send(Ok(done));
                }
            }
            Err(error) => {
                let error = format!("{error:#}");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
