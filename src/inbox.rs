//! The webhook inbox: events are stored (group-committed) before they are acknowledged,
//! carried out after by a bounded pool of workers through the session actors, and
//! replayed if a crash, an outage or a full queue left them undone.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::actors::Sessions;
use crate::db::Database;
use crate::db::inbox::{EventFate, Stored, StoredEvent};
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
/// Stored events replayed at once.
const REPLAY_CONCURRENCY: usize = 32;
/// Events waiting for each worker before the rest wait in the inbox only.
const QUEUE_PER_WORKER: usize = 16;
/// How often the replayer looks whether a full queue has room again.
const ROOM_CHECK: Duration = Duration::from_millis(50);
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
    let retry_after = |attempts: i32| {
        let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        (!permanent && attempts < EVENT_MAX_ATTEMPTS)
            .then(|| backoff(EVENT_BACKOFF, EVENT_BACKOFF_CAP, attempts))
    };
    match db.fail_event(event_id, &reason, retry_after).await {
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

/// Replays the waiting events that arrived before `received_before` (only those due,
/// when `due_only`), in pages by event id. Returns how many were attempted.
pub async fn replay(
    sessions: &Sessions,
    db: &Database,
    received_before: i64,
    due_only: bool,
) -> anyhow::Result<usize> {
    let mut attempted = 0;
    let mut after = String::new();
    loop {
        let page = db
            .waiting_events(received_before, &after, due_only, REPLAY_PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(attempted);
        };
        after = last.id.clone();
        attempted += page.len();
        futures_util::stream::iter(page)
            .for_each_concurrent(REPLAY_CONCURRENCY, |stored| async move {
                replay_one(sessions, db, stored).await;
            })
            .await;
    }
}

async fn replay_one(sessions: &Sessions, db: &Database, stored: StoredEvent) {
    match event::parse(stored.payload.as_bytes()) {
        Ok(Event::Checkout { kind, summary, .. }) => {
            let id = summary.id.clone();
            process(
                sessions,
                db,
                &stored.id,
                &id,
                Trigger::from_event(kind, summary),
            )
            .await;
        }
        Ok(Event::Ignored { .. }) | Err(_) => {
            // Only verified, parseable Checkout events are stored; this row predates a
            // change of rules. Keep it out of every future replay.
            tracing::warn!(event.id = %stored.id, "stored event is not a Checkout event; skipping it");
            let _ = db.mark_processed(&stored.id).await;
        }
    }
}

/// A stored event for a worker to carry out.
pub struct Work {
    pub event_id: String,
    pub session_id: SessionId,
    pub trigger: Trigger,
}

/// The workers that carry out stored events, and the replayer behind them; cheap to clone.
#[derive(Clone)]
pub struct Workers {
    queue: mpsc::Sender<Work>,
    /// Told when an event did not fit in the queue: the replayer takes it from the inbox.
    spilled: Arc<Notify>,
}

impl Workers {
    /// Starts `workers` workers behind a queue of `QUEUE_PER_WORKER` events each, and the
    /// replayer: at start-up it tries every waiting event; then every `every` those due
    /// again, and, as soon as the queue has room, those that did not fit in it.
    pub fn start(sessions: Sessions, db: Database, workers: usize, every: Duration) -> Self {
        let workers = workers.max(1);
        let (queue, jobs) = mpsc::channel(workers * QUEUE_PER_WORKER);
        let spilled = Arc::new(Notify::new());
        tokio::spawn(work(sessions.clone(), db.clone(), jobs, workers));
        tokio::spawn(replay_forever(
            sessions,
            db,
            every,
            queue.clone(),
            Arc::clone(&spilled),
        ));
        Self { queue, spilled }
    }

    /// Hands a stored event to the workers. When they are all busy and the queue is full,
    /// the event waits in the inbox, where the replayer finds it.
    pub fn offer(&self, work: Work) {
        if let Err(TrySendError::Full(work)) = self.queue.try_send(work) {
            tracing::debug!(event.id = %work.event_id, "workers busy; the event waits in the inbox");
            self.spilled.notify_one();
        }
    }
}

async fn work(sessions: Sessions, db: Database, jobs: mpsc::Receiver<Work>, workers: usize) {
    let jobs = futures_util::stream::unfold(jobs, |mut jobs| async move {
        jobs.recv().await.map(|job| (job, jobs))
    });
    jobs.for_each_concurrent(workers, |job| {
        let (sessions, db) = (&sessions, &db);
        async move { process(sessions, db, &job.event_id, &job.session_id, job.trigger).await }
    })
    .await;
}

async fn replay_forever(
    sessions: Sessions,
    db: Database,
    every: Duration,
    queue: mpsc::Sender<Work>,
    spilled: Arc<Notify>,
) {
    // At start-up every waiting event is tried at once, whatever its backoff.
    let mut cutoff = crate::db::now_ms();
    let mut due_only = false;
    loop {
        match replay(&sessions, &db, cutoff, due_only).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(events = count, "replayed stored events"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "could not replay stored events")
            }
        }
        due_only = true;
        tokio::select! {
            () = tokio::time::sleep(every) => {
                // Younger events are still with the workers, or about to be.
                cutoff = crate::db::now_ms() - i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
            }
            () = spilled.notified() => {
                // What is queued goes first; then everything received so far that is
                // waiting. An event also still queued is carried out twice, which its
                // session's actor makes harmless: the second finds it recorded.
                while queue.capacity() < queue.max_capacity() {
                    tokio::time::sleep(ROOM_CHECK).await;
                }
                cutoff = crate::db::now_ms();
            }
        }
    }
}
