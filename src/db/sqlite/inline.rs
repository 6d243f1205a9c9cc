//! Where the SQLite connection's work runs: on the calling thread, or on Tokio's
//! blocking pool while the call may wait (for a lock, for the disk).

use std::error::Error;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use diesel_async::sync_connection_wrapper::SpawnBlocking;
use futures_util::future::BoxFuture;

type TaskResult<R> = Result<R, Box<dyn Error + Send + Sync + 'static>>;

/// Runs the connection's work where it is asked for, or on Tokio's blocking pool while
/// `blocking` is set.
///
/// Work that panics is answered with an error, not the panic, so that its caller fails
/// alone. The panic poisoned the wrapper's mutex; the next turn clears it before it
/// touches the connection (see `Writer::heal`).
#[derive(Default, Clone)]
pub struct Inline {
    pub(super) blocking: Arc<AtomicBool>,
}

impl SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, TaskResult<R>>
    where
        R: Send + 'static,
    {
        if self.blocking.load(Ordering::SeqCst) {
            let task = tokio::task::spawn_blocking(task);
            Box::pin(async move { task.await.map_err(|error| Box::new(error) as _) })
        } else {
            let ran = std::panic::catch_unwind(AssertUnwindSafe(task))
                .map_err(|_| "work on the SQLite connection panicked".into());
            Box::pin(std::future::ready(ran))
        }
    }

    fn get_runtime() -> Self {
        Self::default()
    }
}
