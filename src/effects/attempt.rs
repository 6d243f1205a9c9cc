//! One attempt at one claimed effect: its deadline, its cancellation, and its lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::EffectError;
use super::smtp::Handed;
use crate::db::Database;
use crate::db::effects::{ClaimedEffect, Fence};

/// What an actor is given to carry out an effect once.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub effect: ClaimedEffect,
    deadline: Instant,
    budget: Duration,
    lease: Duration,
    /// Stops the attempt's I/O unless it has passed its point of no return: the lease
    /// could not be renewed.
    stop: CancellationToken,
    /// Stops the attempt's I/O wherever it is: the end of a shutdown's grace.
    abandon: CancellationToken,
    committed: Arc<AtomicBool>,
    /// The place in the SMTP sync gap of a message handed to the mail server, kept until
    /// the attempt's end is recorded.
    handed: Arc<std::sync::Mutex<Option<Handed>>>,
    /// The effect's span, made when the attempt is: the actor that carries it out works
    /// in it.
    pub span: tracing::Span,
}

impl Attempt {
    /// An attempt that has `budget` from now, under a lease of `lease`.
    pub fn new(
        effect: ClaimedEffect,
        budget: Duration,
        lease: Duration,
        stop: CancellationToken,
        abandon: CancellationToken,
    ) -> Self {
        Self {
            effect,
            deadline: Instant::now() + budget,
            budget,
            lease,
            stop,
            abandon,
            committed: Arc::default(),
            handed: Arc::default(),
            span: tracing::Span::current(),
        }
    }

    /// Runs `io`, a conversation with a server outside the database, until it ends, the
    /// attempt's deadline passes or the attempt is stopped. In the last two cases `io` is
    /// dropped, and with it any connection it holds: a connection that still owes a reply
    /// is never used again. An answer that has arrived wins over a deadline or a stop.
    pub async fn io<T>(
        &self,
        io: impl Future<Output = Result<T, EffectError>>,
    ) -> Result<T, EffectError> {
        tokio::select! {
            biased;
            result = io => result,
            () = self.abandoned() => Err(EffectError::Cancelled),
            () = self.stopped() => Err(EffectError::Cancelled),
            () = sleep_until(self.deadline) => Err(EffectError::Retry(format!(
                "no answer within the attempt's {} s (EFFECT_TIMEOUT_SECS)",
                self.budget.as_secs_f32()
            ))),
        }
    }

    /// Completes when the attempt is stopped before its point of no return; after it, a
    /// stop changes nothing: cutting the wait for the answer short could only turn a
    /// delivery into a duplicate.
    async fn stopped(&self) {
        self.stop.cancelled().await;
        if self.committed() {
            std::future::pending::<()>().await;
        }
    }

    /// The same at the end of a shutdown's grace: an attempt past its point of no return
    /// is let finish within its own time (its deadline still holds), so that a deploy
    /// during a slow conversation repeats nothing.
    async fn abandoned(&self) {
        self.abandon.cancelled().await;
        if self.committed() {
            std::future::pending::<()>().await;
        }
    }

    /// Asked just before the step that cannot be taken back (the message body, the
    /// warehouse request). True, and from then on the attempt is committed, while at least
    /// half the attempt's time remains; false when it is too late to begin, and nothing
    /// must be sent. So whatever is begun has half the attempt's time to be answered: a
    /// deadline cuts off only a server that is really stalled, never one that was merely
    /// slow to get ready.
    pub fn commit(&self) -> bool {
        if Instant::now() > self.latest_start() {
            return false;
        }
        // Committed first, then checked: a stop that comes at this moment either sees the
        // commitment and lets the attempt finish, or is seen here and nothing is sent.
        self.committed.store(true, Ordering::SeqCst);
        if self.stop.is_cancelled() || self.abandon.is_cancelled() {
            self.committed.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Keeps `handed` until [`Self::recorded`]: no other message of this process enters
    /// the sync gap before this attempt's end is durable, so a crash repeats one at most.
    pub fn keep_until_recorded(&self, handed: Handed) {
        *self.lock_handed() = Some(handed);
    }

    /// The attempt's end is recorded (or could not be): the next message may go.
    pub fn recorded(&self) {
        self.lock_handed().take();
    }

    fn lock_handed(&self) -> std::sync::MutexGuard<'_, Option<Handed>> {
        self.handed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether the attempt has passed its point of no return.
    pub fn committed(&self) -> bool {
        self.committed.load(Ordering::SeqCst)
    }

    /// The last moment the attempt may begin what cannot be taken back.
    pub fn latest_start(&self) -> Instant {
        self.deadline - self.budget / 2
    }

    /// How long the attempt's database work may wait for a lock another connection holds:
    /// what is left of its time, and never more than half its lease, so that a blocked
    /// transaction ends (and frees its connection) well before the lease could lapse.
    pub fn lock_wait(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .min(self.lease / 2)
    }

    pub fn fence(&self) -> Fence {
        self.effect.fence()
    }
}

/// Renews an attempt's lease until the attempt ends (when this future is dropped). When a
/// renewal is not confirmed in time for the lease to be promised, `stop` is cancelled, in
/// time for the attempt to be stopped before any other process may claim the effect; the
/// renewals go on, for an attempt past its point of no return keeps waiting for its
/// answer. Completes when the lease is no longer the attempt's: another attempt has it.
///
/// `claimed_at` is when the claim was sent; the database set `lease_until` to its own now
/// plus `lease` after that, so the lease holds at least until `claimed_at + lease` on this
/// process's monotonic clock, and likewise after each renewal.
pub async fn hold_lease(
    db: Database,
    fence: Fence,
    lease: Duration,
    claimed_at: Instant,
    stop: CancellationToken,
) {
    let margin = lease / 5;
    let mut holds_until = claimed_at + lease;
    loop {
        let give_up_at = holds_until - margin;
        let now = Instant::now();
        if now >= give_up_at {
            stop.cancel();
        }
        let next = if stop.is_cancelled() {
            now + lease / 4
        } else {
            (now + lease / 4).min(give_up_at)
        };
        sleep_until(next).await;
        let sent = Instant::now();
        // A spawned renewal is never dropped halfway, whatever happens to this future.
        let mut renewal = tokio::spawn({
            let db = db.clone();
            async move { db.renew_lease(fence, lease).await }
        });
        let renewed = loop {
            tokio::select! {
                renewed = &mut renewal => break renewed,
                () = sleep_until(give_up_at), if !stop.is_cancelled() => stop.cancel(),
            }
        };
        match renewed {
            Ok(Ok(true)) => holds_until = sent + lease,
            Ok(Ok(false)) => return,
            Ok(Err(error)) => tracing::warn!(
                error = format!("{error:#}"),
                "could not renew an effect's lease; trying again"
            ),
            Err(_) => stop.cancel(),
        }
    }
}
