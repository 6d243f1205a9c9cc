//! The workers that carry out stored events: each event claimed for this replica first
//! (see `db::claims`), in batches, so that of several replicas exactly one works it;
//! claims renewed while they are worked; background work gives way to the
//! acknowledgement lane.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};

use super::Inbox;
use crate::actors::Sessions;
use crate::db::inbox::{EventFate, StoredEvent};
use crate::db::{Database, millis, now_ms};
use crate::domain::SessionId;
use crate::fulfillment::{FulfillError, Trigger};
use crate::retry::backoff;
use crate::stripe::event::{self, Event};

mod claims;

/// Attempts at an event before it is dead: with the backoff below, about a day of trying.
const EVENT_MAX_ATTEMPTS: u32 = 30;
/// The first wait before an event is tried again, doubled each time, capped.
const EVENT_BACKOFF: Duration = Duration::from_secs(30);
const EVENT_BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// Events waiting for each worker before the rest wait in the inbox only.
const QUEUE_PER_WORKER: usize = 16;
const REPLAY_PAGE: i64 = 500;
/// Events claimed with one statement at most.
const CLAIM_BATCH: usize = 64;
/// When an attempt that met another session's lock is tried again.
const CONTENDED_RETRY: Duration = Duration::from_secs(2);
/// How long a claim holds unless renewed; it is renewed every third of it, and events
/// whose claim ran out are looked for as often.
const EVENT_LEASE: Duration = Duration::from_secs(6);

/// Carries out a stored event through its session's actor and marks it processed once
/// the outcome is recorded. A failure is recorded on the event: it is retried with backoff
/// by the replayer, or dead when it cannot succeed or its attempts ran out. Returns
/// true when the attempt met a lock another session holds (a replica frozen inside its
/// transaction, which the server ends within seconds): the event is due again in
/// [`CONTENDED_RETRY`], not after the usual backoff, and the attempt is not counted.
#[tracing::instrument(skip_all, fields(event.id = %event_id, session.id = %session_id))]
pub async fn process(
    sessions: &Sessions,
    db: &Database,
    event_id: &str,
    session_id: &SessionId,
    trigger: Trigger,
) -> bool {
    let (reason, permanent) = match sessions
        .handle_event(session_id, trigger, Some(event_id))
        .await
    {
        Ok(_) => {
            // Already marked when this attempt recorded the session; not when the outcome
            // was known before (a duplicate), and then this marks it.
            if let Err(error) = db.mark_processed(event_id).await {
                tracing::warn!(error = %format!("{error:#}"), "could not mark event processed; it will be replayed");
            }
            return false;
        }
        Err(FulfillError::Database(error)) if is_lock_timeout(&error) => {
            let reason = format!("{error:#}");
            if let Err(error) = db.put_off_event(event_id, &reason, CONTENDED_RETRY).await {
                tracing::warn!(error = %format!("{error:#}"), "could not record the event's failure; it will be replayed");
            }
            tracing::info!(
                "the session is locked by another database session; trying again shortly"
            );
            return true;
        }
        // Signed by Stripe yet unknown to it: another account's event, or a deleted
        // session. Kept, dead, for an operator: a wrong key can be fixed and the event
        // replayed.
        Err(FulfillError::UnknownSession) => (
            "Stripe answered resource_missing: no such Checkout Session for this key \
             (another account's event, or a deleted session)"
                .to_owned(),
            true,
        ),
        Err(FulfillError::ShuttingDown) => return false,
        Err(error) => (error.to_string(), false),
    };
    record_failure(db, event_id, &reason, permanent).await;
    false
}

/// Whether `error` is PostgreSQL giving up on a lock after `lock_timeout`.
fn is_lock_timeout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<diesel::result::Error>(),
            Some(diesel::result::Error::DatabaseError(_, info)) if info.message().contains("lock timeout")
        )
    })
}

/// Records a failed attempt at an event: retried with backoff, or dead when `permanent`
/// or its attempts ran out.
async fn record_failure(db: &Database, event_id: &str, reason: &str, permanent: bool) {
    let retry_after = |attempts: i32| {
        let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        (!permanent && attempts < EVENT_MAX_ATTEMPTS)
            .then(|| backoff(EVENT_BACKOFF, EVENT_BACKOFF_CAP, attempts))
    };
    match db.fail_event(event_id, reason, retry_after).await {
        Ok(Some(EventFate::Retry { attempts, delay })) => tracing::warn!(
            error = %reason,
            attempts,
            retry_in_s = delay.as_secs(),
            "event not carried out; it will be replayed"
        ),
        Ok(Some(EventFate::Dead { attempts })) => tracing::error!(
            error = %reason,
            attempts,
            "event dead; `fulfilld events replay {event_id}` tries it again"
        ),
        Ok(None) => {}
        Err(error) => tracing::warn!(
            error = %format!("{error:#}"),
            "could not record the event's failure; it will be replayed"
        ),
    }
}

/// A stored event for a worker to carry out.
pub struct Work {
    pub event_id: String,
    pub session_id: SessionId,
    pub trigger: Trigger,
    /// For a replayed event: carried out only if, when it is claimed, it is still
    /// waiting and due by then (a page is read long before its last event is queued).
    pub due_by: Option<i64>,
}

impl Work {
    /// What a stored event asks for, or `None` (and the event is set aside) when it is not
    /// a Checkout event.
    pub async fn of(db: &Database, stored: StoredEvent) -> Option<Self> {
        match event::parse(stored.payload.as_bytes()) {
            Ok(Event::Checkout { kind, summary, .. }) => Some(Self {
                event_id: stored.id,
                session_id: summary.id.clone(),
                trigger: Trigger::from_event(kind, summary),
                due_by: None,
            }),
            Ok(Event::Ignored { .. }) | Err(_) => {
                // Only verified, parseable Checkout events are stored; this row predates a
                // change of rules. Keep it out of every future replay.
                tracing::warn!(event.id = %stored.id, "stored event is not a Checkout event; skipping it");
                let _ = db.mark_processed(&stored.id).await;
                None
            }
        }
    }
}

/// The workers that carry out stored events, and the replayer that feeds them what the
/// queue could not take and what is due again; cheap to clone.
#[derive(Clone)]
pub struct Workers {
    queue: mpsc::Sender<Work>,
    /// This replica, as its claims name it.
    replica: Arc<str>,
    /// The events queued or being carried out: none is queued twice.
    taken: Arc<Mutex<HashSet<String>>>,
    /// Told when an event did not fit in the queue: the replayer takes it from the inbox.
    spilled: Arc<Notify>,
    /// Set when an attempt met another session's lock: the replayer looks again in
    /// seconds, not a whole period later.
    contended: Arc<AtomicBool>,
}

impl Workers {
    /// Starts `workers` workers behind a queue of `QUEUE_PER_WORKER` events each, and the
    /// replayer: at start-up it queues every waiting event; then, every `every` and
    /// whenever an event did not fit, those due, as fast as the workers take them.
    pub fn start(
        sessions: Sessions,
        db: Database,
        inbox: Inbox,
        replica: &str,
        workers: usize,
        every: Duration,
    ) -> Self {
        let workers = workers.max(1);
        let (queue, jobs) = mpsc::channel(workers * QUEUE_PER_WORKER);
        let this = Self {
            queue,
            replica: Arc::from(replica),
            taken: Arc::default(),
            spilled: Arc::default(),
            contended: Arc::default(),
        };
        tokio::spawn(
            this.clone()
                .work(sessions, db.clone(), inbox, jobs, workers),
        );
        tokio::spawn(this.clone().renew_claims(db.clone()));
        tokio::spawn(this.clone().take_over_abandoned(db.clone()));
        tokio::spawn(this.clone().replay_forever(db, every));
        this
    }

    /// Hands a stored event to the workers, unless they have it already. When they are all
    /// busy and the queue is full, the event waits in the inbox, where the replayer finds
    /// it.
    pub fn offer(&self, work: Work) {
        if !self.take(&work.event_id) {
            return;
        }
        match self.queue.try_send(work) {
            Ok(()) => {}
            Err(TrySendError::Full(work)) => {
                self.untake(&work.event_id);
                tracing::debug!(event.id = %work.event_id, "workers busy; the event waits in the inbox");
                self.spilled.notify_one();
            }
            Err(TrySendError::Closed(work)) => {
                self.untake(&work.event_id);
                tracing::error!(event.id = %work.event_id, "the workers have stopped; the event waits in the inbox");
            }
        }
    }

    /// Queues `work` once there is room, unless the workers have it already. Returns
    /// whether it was queued.
    async fn submit(&self, work: Work) -> bool {
        let Ok(room) = self.queue.reserve().await else {
            return false;
        };
        if !self.take(&work.event_id) {
            return false;
        }
        room.send(work);
        true
    }

    fn take(&self, event_id: &str) -> bool {
        lock(&self.taken).insert(event_id.to_owned())
    }

    fn untake(&self, event_id: &str) {
        lock(&self.taken).remove(event_id);
    }

    async fn replay_forever(self, db: Database, every: Duration) {
        // At start-up every waiting event is tried at once, whatever its backoff.
        let mut received_before = i64::MAX;
        let mut due_only = false;
        loop {
            match self.replay(&db, received_before, due_only).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(events = count, "replayed stored events"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not replay stored events")
                }
            }
            due_only = true;
            let (wait, younger) = match self.contended.swap(false, Ordering::SeqCst) {
                true => (CONTENDED_RETRY + Duration::from_secs(1), Duration::ZERO),
                false => (every, every),
            };
            received_before = tokio::select! {
                // Younger events are with the workers of the process that stored them.
                () = tokio::time::sleep(wait) => now_ms() - millis(younger),
                // Ours did not fit in the queue: everything stored so far.
                () = self.spilled.notified() => now_ms(),
            };
        }
    }

    /// Queues the waiting events received before `received_before` (only those due, when
    /// `due_only`) that the workers do not have, in pages by event id, as fast as the
    /// workers take them. Returns how many.
    async fn replay(
        &self,
        db: &Database,
        received_before: i64,
        due_only: bool,
    ) -> anyhow::Result<usize> {
        let due_by = if due_only { now_ms() } else { i64::MAX };
        let mut queued = 0;
        let mut after = String::new();
        loop {
            let page = db
                .waiting_events(received_before, &after, due_only, REPLAY_PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(queued);
            };
            after = last.id.clone();
            for stored in page {
                if let Some(work) = Work::of(db, stored).await
                    && self
                        .submit(Work {
                            due_by: Some(due_by),
                            ..work
                        })
                        .await
                {
                    queued += 1;
                }
            }
        }
    }
}

fn lock(taken: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    taken.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Workers {
    /// Claims what is queued, a batch at a time as workers come free, and carries out
    /// what it claimed, `workers` at once.
    async fn work(
        self,
        sessions: Sessions,
        db: Database,
        inbox: Inbox,
        jobs: mpsc::Receiver<Work>,
        workers: usize,
    ) {
        let (this, claiming) = (self.clone(), db.clone());
        let claimed = futures_util::stream::unfold(jobs, move |mut jobs| {
            let (this, db) = (this.clone(), claiming.clone());
            async move {
                let first = jobs.recv().await?;
                let mut batch = vec![first];
                while batch.len() < CLAIM_BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let claimed = this.claim(&db, batch).await;
                Some((futures_util::stream::iter(claimed), jobs))
            }
        })
        .flatten();
        claimed
            .for_each_concurrent(workers, |job| {
                let (sessions, db, inbox) = (sessions.clone(), db.clone(), inbox.clone());
                let this = self.clone();
                async move {
                    // Acknowledgements first, once per job (its batch's claim does not
                    // wait as well).
                    inbox.give_way().await;
                    let event_id = job.event_id.clone();
                    // A task of its own, so that a panic ends one attempt, not the pool.
                    let attempt = tokio::spawn({
                        let db = db.clone();
                        async move {
                            process(&sessions, &db, &job.event_id, &job.session_id, job.trigger)
                                .await
                        }
                    });
                    match attempt.await {
                        Ok(contended) => {
                            if contended {
                                this.contended.store(true, Ordering::SeqCst);
                            }
                        }
                        Err(_) => {
                            tracing::error!(event.id = %event_id, "carrying out an event panicked");
                            record_failure(&db, &event_id, "carrying it out panicked", false).await;
                        }
                    }
                    this.untake(&event_id);
                }
            })
            .await;
    }
}
