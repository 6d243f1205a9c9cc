//! [`Effects`], the running dispatcher, and its shutdown: attempts given a grace period,
//! the rest handed back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{EffectDispatcher, RECORD_AFTER_ABANDON};

/// The running dispatcher, to be shut down.
pub struct Effects {
    pub(super) run: JoinHandle<()>,
    pub(super) stop: CancellationToken,
    pub(super) attempts: TaskTracker,
    pub(super) dispatcher: Arc<EffectDispatcher>,
}

/// What a shutdown did with the attempts in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// Attempts that ended on their own within the grace period (or after it, in the
    /// database, where nothing is cancelled).
    pub finished: usize,
    /// Attempts stopped at the end of the grace period. Their effects are handed back:
    /// at once and uncounted when nothing had left, else as a failed attempt.
    pub released: usize,
}

impl Effects {
    /// Stops claiming, gives the attempts in flight up to `grace` to finish, then cancels
    /// the rest and hands their effects back at once, but for attempts past their point of
    /// no return: those are waited for until their own deadline (`EFFECT_TIMEOUT_SECS`),
    /// since cutting them off could only repeat them. Returns what became of them.
    pub async fn shutdown(self, grace: Duration) -> Shutdown {
        self.stop.cancel();
        // The loop ends at its next wait; a claim under way is carried out first.
        let _ = self.run.await;
        self.attempts.close();
        let in_flight = self.attempts.len();
        if tokio::time::timeout(grace, self.attempts.wait())
            .await
            .is_err()
        {
            self.dispatcher.abandon.cancel();
            // Stopped attempts record their end at once, and committed ones theirs by their
            // deadline; only database work still under way (bounded by its own timeouts)
            // could take longer, and a transaction cut off by the exit is rolled back.
            // A committed attempt began before the shutdown, so its deadline is at most
            // the attempt timeout after the shutdown's start, of which `grace` has passed.
            let within = self.dispatcher.timeout.saturating_sub(grace) + RECORD_AFTER_ABANDON;
            let _ = tokio::time::timeout(within, self.attempts.wait()).await;
        }
        let released = self.dispatcher.released.load(Ordering::Relaxed);
        Shutdown {
            finished: in_flight.saturating_sub(released),
            released,
        }
    }
}
