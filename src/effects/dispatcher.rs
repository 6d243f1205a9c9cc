//! `EffectDispatcher`: claims due effects and hands each to the actor for its kind.
//!
//! It wakes when a transaction enqueues effects ([`Outbox::wake`]), when an attempt ends,
//! and on a timer, which also picks up effects enqueued by other processes, effects due for
//! a retry, and effects whose lease ran out because the process holding them died.
//!
//! An attempt holds a lease of `EFFECT_LEASE_SECS`, renewed while it runs. If a renewal is
//! refused or not confirmed in time, the attempt's I/O is cancelled before the lease can
//! run out, so no two attempts at one effect ever talk to the outside world at once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::attempt::{Attempt, hold_lease};
use super::settle::Completions;
use super::{EffectActors, EffectError, Effected, Outbox};
use crate::configuration::EffectsConfig;
use crate::db::Database;
use crate::db::effects::{Aside, ClaimedEffect, Fence};
use crate::inbox::Inbox;
use crate::metrics::{EffectAttempt, METRICS};
use crate::retry::backoff;
use crate::telemetry;

mod shutdown;

pub use shutdown::{Effects, Shutdown};

/// Attempts running at once in one process.
pub const MAX_IN_FLIGHT: usize = 32;
/// How often the outbox is read when nothing wakes the dispatcher.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// While the outbox holds more than the attempts in flight can take, a claim waits until
/// this many can start, or for [`BATCH_WAIT`]: a claim is a statement and a commit, and
/// claiming each effect as the one before it ends would spend one on every effect.
const CLAIM_BATCH: usize = 8;
/// The longest a freed place waits for others to claim with.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// How long a shutdown waits for abandoned attempts to record how they ended.
const RECORD_AFTER_ABANDON: Duration = Duration::from_secs(3);
/// The longest wait between two attempts at an effect.
const BACKOFF_CAP: Duration = Duration::from_secs(3600);

/// Carries out the outbox.
pub struct EffectDispatcher {
    db: Database,
    actors: EffectActors,
    outbox: Outbox,
    /// Given way to before each claim: acknowledgements go first.
    inbox: Inbox,
    /// Where attempts that are done are recorded, together.
    completions: Completions,
    max_attempts: u32,
    backoff: Duration,
    timeout: Duration,
    lease: Duration,
    /// Stops the I/O of every attempt in flight: the end of a shutdown's grace.
    abandon: CancellationToken,
    released: AtomicUsize,
    /// Effects this process is attempting, left out of its claims: an attempt past its
    /// point of no return may outlive a lease it could not renew, and this process never
    /// starts a second one beside it.
    running: Mutex<HashSet<i64>>,
}

impl EffectDispatcher {
    /// The dispatcher, and the writer of its completions on the current runtime.
    pub fn new(
        db: Database,
        actors: EffectActors,
        outbox: Outbox,
        inbox: Inbox,
        config: &EffectsConfig,
    ) -> Self {
        Self {
            completions: Completions::start(db.clone()),
            db,
            actors,
            outbox,
            inbox,
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            timeout: config.timeout,
            lease: config.lease,
            abandon: CancellationToken::new(),
            released: AtomicUsize::new(0),
            running: Mutex::default(),
        }
    }

    /// Starts claiming and carrying out effects, until [`Effects::shutdown`].
    pub fn spawn(self) -> Effects {
        let dispatcher = Arc::new(self);
        let stop = CancellationToken::new();
        let attempts = TaskTracker::new();
        let run = tokio::spawn(Arc::clone(&dispatcher).run(stop.clone(), attempts.clone()));
        Effects {
            run,
            stop,
            attempts,
            dispatcher,
        }
    }

    async fn run(self: Arc<Self>, stop: CancellationToken, attempts: TaskTracker) {
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        // The last claim took all it asked for: more may be due than can start.
        let mut behind = false;
        // When a place first came free while behind, for the batch it waits for.
        let mut freed_at: Option<Instant> = None;
        while !stop.is_cancelled() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.inbox.give_way() => {}
            }
            let free = in_flight.available_permits();
            if behind && free > 0 && free < CLAIM_BATCH.min(MAX_IN_FLIGHT) {
                let batch_at = *freed_at.get_or_insert_with(Instant::now) + BATCH_WAIT;
                if Instant::now() < batch_at {
                    tokio::select! {
                        () = self.outbox.woken() => {}
                        () = tokio::time::sleep_until(batch_at) => {}
                        () = stop.cancelled() => {}
                    }
                    continue;
                }
            }
            freed_at = None;
            let claimed_at = Instant::now();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                let running: Vec<i64> = self.lock_running().iter().copied().collect();
                self.db
                    .claim_effects(free, self.lease, &running)
                    .await
                    .unwrap_or_else(|error| {
                        tracing::error!(error = format!("{error:#}"), "could not read the outbox");
                        Vec::new()
                    })
            };
            let more = free > 0 && claimed.len() == free;
            if free > 0 {
                behind = more;
            }
            for effect in claimed {
                // Only this loop takes permits, and it claimed no more than were free.
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    break;
                };
                let this = Arc::clone(&self);
                let running = Running::new(Arc::clone(&self), effect.id);
                let span = tracing::info_span!(
                    "effect",
                    session.id = %effect.session_id,
                    effect.id = effect.id,
                    effect.kind = %effect.kind,
                    effect.attempt = effect.attempts,
                );
                telemetry::continue_stored(&span, effect.traceparent.as_deref());
                attempts.spawn(
                    async move {
                        this.attempt(effect, claimed_at).await;
                        drop(running);
                        drop(permit);
                        this.outbox.wake();
                    }
                    .instrument(span),
                );
            }
            if more {
                continue;
            }
            tokio::select! {
                () = self.outbox.woken() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// One attempt at one effect, and its bookkeeping, in the span the loop made for it.
    async fn attempt(&self, effect: ClaimedEffect, claimed_at: Instant) {
        let started = Instant::now();
        let fence = effect.fence();
        if effect.set_aside().is_some() {
            let aside = self
                .db
                .set_aside(fence, &effect.session_id, effect.kind)
                .await;
            let outcome = match aside {
                Ok(Aside::Attempt) => None,
                Ok(Aside::Done(to)) => Some(to.as_str()),
                Ok(Aside::Superseded) => Some("superseded"),
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "could not set the effect aside"
                    );
                    Some("retry")
                }
            };
            if let Some(outcome) = outcome {
                tracing::info!(
                    outcome,
                    "the session was refunded in full or disputed first; not carried out"
                );
                let kind = effect.kind.as_str();
                METRICS
                    .effect_attempts
                    .get_or_create(&EffectAttempt { kind, outcome })
                    .inc();
                return;
            }
        }
        let attempts = u32::try_from(effect.attempts).unwrap_or(u32::MAX);
        let stop = CancellationToken::new();
        let abandon = self.abandon.clone();
        let attempt = Attempt::new(effect, self.timeout, self.lease, stop.clone(), abandon);
        let work = self.actors.perform(attempt.clone());
        let lease = hold_lease(self.db.clone(), fence, self.lease, claimed_at, stop.clone());
        tokio::pin!(work, lease);
        let mut leased = true;
        let result = tokio::select! {
            // A finished attempt's result stands, whatever its last renewal found.
            biased;
            result = &mut work => result,
            () = &mut lease => {
                // The effect is no longer leased to this attempt: either the attempt
                // recorded its end itself a moment ago, or another attempt holds it, and
                // then whatever this one writes is fenced off.
                leased = false;
                stop.cancel();
                work.await.map_err(|_| EffectError::Superseded)
            }
        };
        // Stopped because the lease could not be renewed in time, not by a shutdown.
        let result = match result {
            Err(EffectError::Cancelled) if !self.abandon.is_cancelled() => Err(EffectError::Retry(
                "stopped: its lease could not be renewed in time".into(),
            )),
            result => result,
        };
        let duration_ms = started.elapsed().as_millis();
        let succeeded = result.is_ok();
        let recording = std::time::Instant::now();
        let kind = attempt.effect.kind.as_str();
        // The lease is renewed until the end is recorded too: an effect done and not yet
        // marked so must not be claimed by another attempt meanwhile.
        let record = async {
            match result {
                Ok(Effected::Recorded) => ("done", Ok(true)),
                // From here until the commit, a crash would repeat an effect already done:
                // `record_ms` measures that window.
                Ok(Effected::Done) => ("done", self.completions.complete(fence).await),
                // Shut down before anything left: hand the effect back, uncounted.
                Err(EffectError::Cancelled) if !attempt.committed() => {
                    self.released.fetch_add(1, Ordering::Relaxed);
                    (
                        "released",
                        self.db.release_effect(fence, Duration::ZERO).await,
                    )
                }
                // Shut down while waiting for an answer: the server may have it. Counted, so
                // a server that never answers is dead in the end rather than sent to forever.
                Err(EffectError::Cancelled) => {
                    self.released.fetch_add(1, Ordering::Relaxed);
                    let reason = "shut down before the answer came; it may have arrived";
                    if attempts < self.max_attempts {
                        let delay = backoff(self.backoff, BACKOFF_CAP, attempts);
                        ("retry", self.db.retry_effect(fence, delay, reason).await)
                    } else {
                        ("dead", self.db.bury_effect(fence, reason).await)
                    }
                }
                Err(EffectError::Superseded) => ("superseded", Ok(false)),
                Err(EffectError::Wait(reason, until)) => {
                    let due = Duration::from_millis(
                        u64::try_from(until.saturating_sub(crate::db::now_ms())).unwrap_or(0),
                    );
                    let delay = due.clamp(self.backoff, BACKOFF_CAP.max(self.backoff));
                    tracing::info!(
                        reason,
                        retry_in_ms = delay.as_millis(),
                        "effect waits for another of its session"
                    );
                    ("waiting", self.db.release_effect(fence, delay).await)
                }
                Err(EffectError::Retry(reason)) if attempts < self.max_attempts => {
                    let delay = backoff(self.backoff, BACKOFF_CAP, attempts);
                    tracing::warn!(
                        error = %reason,
                        retry_in_ms = delay.as_millis(),
                        "effect failed; will retry"
                    );
                    ("retry", self.db.retry_effect(fence, delay, &reason).await)
                }
                Err(EffectError::Retry(reason) | EffectError::Permanent(reason)) => {
                    tracing::error!(
                        error = %reason,
                        "effect dead; `fulfilld effects retry {}` tries it again",
                        fence.id
                    );
                    ("dead", self.db.bury_effect(fence, &reason).await)
                }
            }
        };
        tokio::pin!(record);
        let (outcome, recorded) = tokio::select! {
            biased;
            recorded = &mut record => recorded,
            // The lease ended: most often the recording itself just ended it.
            () = &mut lease, if leased => record.await,
        };
        attempt.recorded();
        METRICS
            .effect_attempts
            .get_or_create(&EffectAttempt { kind, outcome })
            .inc();
        match recorded {
            Ok(true) if succeeded => {
                let record_ms = recording.elapsed().as_millis();
                tracing::info!(duration_ms, record_ms, "effect done");
            }
            Ok(true) => {}
            Ok(false) => superseded(fence),
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "could not record the effect's result; it will be attempted again"
            ),
        }
    }
}

/// An effect this process is attempting, until dropped (however the attempt ends).
struct Running {
    dispatcher: Arc<EffectDispatcher>,
    id: i64,
}

impl Running {
    fn new(dispatcher: Arc<EffectDispatcher>, id: i64) -> Self {
        dispatcher.lock_running().insert(id);
        Self { dispatcher, id }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.dispatcher.lock_running().remove(&self.id);
    }
}

fn superseded(fence: Fence) {
    tracing::warn!(
        effect.lease = fence.lease,
        "the effect's lease passed to another attempt; this attempt's result is dropped"
    );
}
