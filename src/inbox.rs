//! The webhook inbox: events are stored (group-committed) before they are acknowledged,
//! carried out through the session actors after, and replayed if a crash or an outage
//! left them undone.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

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

/// Replays left-over events at start-up, then keeps retrying those older than `every`.
pub fn spawn_replayer(sessions: Sessions, db: Database, every: Duration) {
    tokio::spawn(async move {
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
            tokio::time::sleep(every).await;
            cutoff = crate::db::now_ms() - i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
            due_only = true;
        }
    });
}
