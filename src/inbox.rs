//! The webhook inbox: events are stored (group-committed) before they are acknowledged,
//! carried out after by a bounded pool of workers through the session actors, and
//! replayed if a crash, an outage or a full queue left them undone.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::actors::Sessions;
use crate::db::inbox::{EventFate, Stored, StoredEvent};
use crate::db::{Database, now_ms};
use crate::domain::SessionId;
use crate::fulfillment::{FulfillError, Trigger};
use crate::retry::backoff;
use crate::stripe::event::{self, Event};

/// Events written in one transaction at most.
const MAX_BATCH: usize = 512;
/// Deliveries waiting for the writer before the webhook handler waits for room.
const QUEUE_DEPTH: usize = 8192;
/// Attempts at an event before it is dead: with the backoff below, about a day of trying.
const EVENT_MAX_ATTEMPTS: u32 = 30;
/// The first wait before an event is tried again, doubled each time, capped.
const EVENT_BACKOFF: Duration = Duration::from_secs(30);
const EVENT_BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// Events waiting for each worker before the rest wait in the inbox only.
const QUEUE_PER_WORKER: usize = 16;
const REPLAY_PAGE: i64 = 500;

type Pending = (StoredEvent, oneshot::Sender<Result<Stored, String>>);

/// A handle to the inbox writer; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    queue: mpsc::Sender<Pending>,
}

impl Inbox {
    /// Starts the writer task on the current runtime.
    pub fn start(db: Database) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_batches(db, pending));
        Self { queue }
    }

    /// Stores one event durably. Concurrent deliveries share a commit.
    pub async fn store(&self, event: StoredEvent) -> anyhow::Result<Stored> {
        let (reply, stored) = oneshot::channel();
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the inbox writer has stopped"))?;
        stored
            .await
            .map_err(|_| anyhow::anyhow!("the inbox writer has stopped"))?
            .map_err(anyhow::Error::msg)
    }
}

async fn write_batches(db: Database, mut pending: mpsc::Receiver<Pending>) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (events, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match db.store_events(&events).await {
            Ok(stored) => {
                for (reply, stored) in replies.into_iter().zip(stored) {
                    let _ = reply.send(Ok(stored));
                }
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), events = events.len(), "could not store webhook events");
                for reply in replies {
                    let _ = reply.send(Err(format!("{error:#}")));
                }
            }
        }
    }
}

/// Carries out a stored event through its session's actor and marks it processed once
/// the outcome is recorded. A failure is recorded on the event: it is retried with backoff
/// by the replayer, or dead when it cannot succeed or its attempts ran out.
#[tracing::instrument(skip_all, fields(event.id = %event_id, session.id = %session_id))]
pub async fn process(
    sessions: &Sessions,
    db: &Database,
    event_id: &str,
    session_id: &SessionId,
    trigger: Trigger,
) {
    let (reason, permanent) = match sessions.handle(session_id, trigger).await {
        Ok(_) => {
            if let Err(error) = db.mark_processed(event_id).await {
                tracing::warn!(error = %format!("{error:#}"), "could not mark event processed; it will be replayed");
            }
            return;
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
        Err(FulfillError::ShuttingDown) => return,
        Err(error) => (error.to_string(), false),
    };
    record_failure(db, event_id, &reason, permanent).await;
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
    /// For a replayed event: carried out only if, when a worker takes it, it is still
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
    /// The events queued or being carried out: none is queued twice.
    taken: Arc<Mutex<HashSet<String>>>,
    /// Told when an event did not fit in the queue: the replayer takes it from the inbox.
    spilled: Arc<Notify>,
}

impl Workers {
    /// Starts `workers` workers behind a queue of `QUEUE_PER_WORKER` events each, and the
    /// replayer: at start-up it queues every waiting event; then, every `every` and
    /// whenever an event did not fit, those due, as fast as the workers take them.
    pub fn start(sessions: Sessions, db: Database, workers: usize, every: Duration) -> Self {
        let workers = workers.max(1);
        let (queue, jobs) = mpsc::channel(workers * QUEUE_PER_WORKER);
        let this = Self {
            queue,
            taken: Arc::default(),
            spilled: Arc::default(),
        };
        tokio::spawn(work(
            sessions,
            db.clone(),
            jobs,
            workers,
            Arc::clone(&this.taken),
        ));
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
            received_before = tokio::select! {
                // Younger events are with the workers of the process that stored them.
                () = tokio::time::sleep(every) => now_ms() - millis(every),
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

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn lock(taken: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    taken.lock().unwrap_or_else(|poison| poison.into_inner())
}

async fn work(
    sessions: Sessions,
    db: Database,
    jobs: mpsc::Receiver<Work>,
    workers: usize,
    taken: Arc<Mutex<HashSet<String>>>,
) {
    let jobs = futures_util::stream::unfold(jobs, |mut jobs| async move {
        jobs.recv().await.map(|job| (job, jobs))
    });
    jobs.for_each_concurrent(workers, |job| {
        let (sessions, db, taken) = (sessions.clone(), db.clone(), Arc::clone(&taken));
        async move {
            let event_id = job.event_id.clone();
            // A task of its own, so that a panic ends one attempt, not the pool.
            let attempt = tokio::spawn({
                let db = db.clone();
                async move {
                    if let Some(due_by) = job.due_by {
                        match db.is_waiting(&job.event_id, due_by).await {
                            Ok(true) => {}
                            // Carried out, dead, or put off since its page was read.
                            Ok(false) => return,
                            Err(error) => {
                                tracing::warn!(event.id = %job.event_id, error = %format!("{error:#}"), "could not read a replayed event; it will be replayed");
                                return;
                            }
                        }
                    }
                    process(&sessions, &db, &job.event_id, &job.session_id, job.trigger).await;
                }
            });
            if attempt.await.is_err() {
                tracing::error!(event.id = %event_id, "carrying out an event panicked");
                record_failure(&db, &event_id, "carrying it out panicked", false).await;
            }
            lock(&taken).remove(&event_id);
        }
    })
    .await;
}
