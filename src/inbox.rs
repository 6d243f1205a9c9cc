//! The webhook inbox: events are stored (group-committed) before they are acknowledged,
//! carried out through the session actors after, and replayed if a crash or an outage
//! left them undone.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::actors::Sessions;
use crate::db::Database;
use crate::db::inbox::{Stored, StoredEvent};
use crate::domain::SessionId;
use crate::fulfillment::{FulfillError, Trigger};
use crate::stripe::event::{self, Event};

/// Events written in one transaction at most.
const MAX_BATCH: usize = 512;
/// Deliveries waiting for the writer before the webhook handler waits for room.
const QUEUE_DEPTH: usize = 8192;
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
/// the outcome is recorded. A failure leaves it for the replayer.
#[tracing::instrument(skip_all, fields(event.id = %event_id, session.id = %session_id))]
pub async fn process(
    sessions: &Sessions,
    db: &Database,
    event_id: &str,
    session_id: &SessionId,
    trigger: Trigger,
) {
    match sessions.handle(session_id, trigger).await {
        Ok(_) => {}
        Err(FulfillError::UnknownSession) => {
            // Signed by Stripe yet unknown to it: another account's key, or a deleted
            // test session. Nothing will ever change that, so do not replay it.
            tracing::warn!("event names a session Stripe does not know; marking it processed");
        }
        Err(error) => {
            tracing::warn!(error = %error, "event not processed yet; it will be replayed");
            return;
        }
    }
    if let Err(error) = db.mark_processed(event_id).await {
        tracing::warn!(error = %format!("{error:#}"), "could not mark event processed; it will be replayed");
    }
}

/// Replays every stored event that arrived before `received_before` and is not
/// processed yet. Returns how many were attempted.
pub async fn replay(
    sessions: &Sessions,
    db: &Database,
    received_before: i64,
) -> anyhow::Result<usize> {
    let mut attempted = 0;
    let mut seen_last_page = None;
    loop {
        let page = db.unprocessed_events(received_before, REPLAY_PAGE).await?;
        // A page of events that all failed again would come back unchanged: stop there
        // and leave them for the next round.
        let first = page.first().map(|event| event.id.clone());
        if page.is_empty() || first == seen_last_page {
            return Ok(attempted);
        }
        seen_last_page = first;
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
        let mut cutoff = crate::db::now_ms();
        loop {
            match replay(&sessions, &db, cutoff).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(events = count, "replayed stored events"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not replay stored events")
                }
            }
            tokio::time::sleep(every).await;
            cutoff = crate::db::now_ms() - i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        }
    });
}
