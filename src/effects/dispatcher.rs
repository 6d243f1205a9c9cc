//! `EffectDispatcher`: claims due effects and hands each to the actor for its kind.
//!
//! It wakes when a transaction enqueues effects ([`Outbox::wake`]), when an attempt ends,
//! and on a timer, which also picks up effects enqueued by other processes, effects due for
//! a retry, and effects whose lease ran out because the process holding them died.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{EffectActors, EffectError, Effected, Outbox};
use crate::configuration::EffectsConfig;
use crate::db::effects::ClaimedEffect;
use crate::db::{Database, now_ms};
use crate::retry::backoff;

/// Attempts running at once in one process.
const MAX_IN_FLIGHT: usize = 32;
/// How often the outbox is read when nothing wakes the dispatcher.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at an effect.
const BACKOFF_CAP: Duration = Duration::from_secs(3600);

/// Carries out the outbox.
#[derive(Clone)]
pub struct EffectDispatcher {
    db: Database,
    actors: EffectActors,
    outbox: Outbox,
    in_flight: Arc<Semaphore>,
    max_attempts: u32,
    backoff: Duration,
    timeout: Duration,
}

impl EffectDispatcher {
    pub fn new(db: Database, actors: EffectActors, outbox: Outbox, config: &EffectsConfig) -> Self {
        Self {
            db,
            actors,
            outbox,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            timeout: config.timeout,
        }
    }

    /// Runs until the process ends.
    pub fn spawn(self) {
        tokio::spawn(self.run());
    }

    /// How long the dispatcher waits for an attempt's result. The actors bound each I/O by
    /// `timeout` and an attempt may first wait for a connection, so this is rarely reached.
    fn backstop(&self) -> Duration {
        self.timeout * 4
    }

    /// A lease outlives an attempt by a margin, so an effect in flight is never taken by a
    /// second process; it runs out only when its process has died.
    fn lease(&self) -> Duration {
        self.backstop() + self.timeout + Duration::from_secs(1)
    }

    async fn run(self) {
        loop {
            let free = self.in_flight.available_permits();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                self.db
                    .claim_effects(free, self.lease())
                    .await
                    .unwrap_or_else(|error| {
                        tracing::error!(error = format!("{error:#}"), "could not read the outbox");
                        Vec::new()
                    })
            };
            let more = free > 0 && claimed.len() == free;
            for effect in claimed {
                let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
                    break;
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.attempt(effect).await;
                    drop(permit);
                    this.outbox.wake();
                });
            }
            if more {
                continue;
            }
            tokio::select! {
                () = self.outbox.woken() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    }

    /// One attempt at one effect, and its bookkeeping. A failure to record the result
    /// leaves the lease to run out, and the effect is attempted again.
    #[tracing::instrument(skip_all, fields(session.id = %effect.session_id, effect.id = effect.id, effect.kind = %effect.kind, effect.attempt = effect.attempts))]
    async fn attempt(&self, effect: ClaimedEffect) {
        let started = Instant::now();
        let id = effect.id;
        let attempts = u32::try_from(effect.attempts).unwrap_or(u32::MAX);
        let Ok(result) = tokio::time::timeout(self.backstop(), self.actors.perform(effect)).await
        else {
            // The attempt may still be running inside its actor; releasing the row now
            // could start a second one. The lease runs out a little later instead.
            tracing::warn!(
                backstop_s = self.backstop().as_secs(),
                "effect still running; it will be retried once its lease runs out"
            );
            return;
        };
        let duration_ms = started.elapsed().as_millis();
        let recording = Instant::now();
        let recorded = match result {
            Ok(Effected::Recorded) => Ok(()),
            // From here until the commit, a crash would repeat an effect already done:
            // `record_ms` measures that window.
            Ok(Effected::Done) => self.db.complete_effect(id).await,
            Err(EffectError::Retry(reason)) if attempts < self.max_attempts => {
                let delay = backoff(self.backoff, BACKOFF_CAP, attempts);
                tracing::warn!(
                    error = %reason,
                    retry_in_ms = delay.as_millis(),
                    "effect failed; will retry"
                );
                let at =
                    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                return self.record(self.db.retry_effect_at(id, at, &reason).await);
            }
            Err(EffectError::Retry(reason) | EffectError::Permanent(reason)) => {
                tracing::error!(
                    error = %reason,
                    "effect dead; `fulfilld effects retry {id}` tries it again"
                );
                return self.record(self.db.bury_effect(id, &reason).await);
            }
        };
        if recorded.is_ok() {
            let record_ms = recording.elapsed().as_millis();
            tracing::info!(duration_ms, record_ms, "effect done");
        }
        self.record(recorded);
    }

    fn record(&self, recorded: anyhow::Result<()>) {
        if let Err(error) = recorded {
            tracing::error!(
                error = format!("{error:#}"),
                "could not record the effect's result; it will be attempted again"
            );
        }
    }
}
