//! The webhook inbox: events are stored before they are acknowledged, in a lane of
//! their own that no background work gets in front of; carried out after by a bounded
//! pool of workers through the session actors ([`workers`]), one replica at a time; and
//! replayed if a crash, an outage or a full queue left them undone.

mod pressure;
mod workers;

pub use pressure::{Arrival, Turn};
pub use workers::{Job, Work, Workers, process, reverse};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::db::Database;
use crate::db::inbox::{Stored, StoredEvent, store_events_postgres};
use crate::db::postgres::Role;
use crate::stripe::event::Event;
use pressure::Pressure;

/// Events written in one transaction at most.
const MAX_BATCH: usize = 512;
/// The longest a batch may take on PostgreSQL before its deliveries are answered 503.
const LANE_TIMEOUT: Duration = Duration::from_secs(6);
/// Deliveries waiting for the writer before the webhook handler waits for room.
const QUEUE_DEPTH: usize = 8192;
/// Connections of the acknowledgement lane's own on PostgreSQL: while one batch waits
/// for its commit, the next is written on the other.
const POSTGRES_LANES: usize = 2;
/// What a verified delivery of `payload` is stored as, received now: under its session,
/// or for refund news under the payment intent it names (its session may not be known
/// yet). `None` for an event fulfilld does not act on, which is not stored.
pub fn to_store(event: &Event, payload: String) -> Option<StoredEvent> {
    let (subject, livemode, account) = match event {
        Event::Checkout { summary, .. } => (
            summary.id.to_string(),
            summary.livemode,
            summary.account.as_ref(),
        ),
        Event::Refund {
            livemode,
            account,
            news,
            ..
        } => (news.payment_intent.clone(), *livemode, account.as_ref()),
        Event::Ignored { .. } => return None,
    };
    Some(StoredEvent {
        id: event.id().to_owned(),
        event_type: event.type_name().to_owned(),
        session_id: subject,
        livemode,
        payload,
        received_at: crate::db::now_ms(),
        processed_at: None,
        account: account.map(ToString::to_string),
    })
}

type Pending = (StoredEvent, oneshot::Sender<Result<Stored, String>>);
type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>;

/// A handle to the acknowledgement lane; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    queue: mpsc::Sender<Pending>,
    pressure: Arc<Pressure>,
}

impl Inbox {
    /// Starts the lane's writers on the current runtime: on SQLite one, whose turns go
    /// ahead of every background turn; on PostgreSQL [`POSTGRES_LANES`], each on a
    /// connection of its own, outside the pool the background work uses.
    pub fn start(db: Database) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        let pending: Queue = Arc::new(tokio::sync::Mutex::new(pending));
        let pressure = Arc::new(Pressure::default());
        let writers = match db {
            Database::Sqlite(_) => 1,
            Database::Postgres(_) => POSTGRES_LANES,
        };
        for _ in 0..writers {
            tokio::spawn(write_batches(db.clone(), Arc::clone(&pending)));
        }
        Self { queue, pressure }
    }

    /// Stores one event durably. Concurrent deliveries share a commit.
    pub async fn store(&self, event: StoredEvent) -> anyhow::Result<Stored> {
        let (reply, stored) = oneshot::channel();
        if self.queue.send((event, reply)).await.is_err() {
            anyhow::bail!("the inbox writer has stopped");
        }
        stored
            .await
            .map_err(|_| anyhow::anyhow!("the inbox writer has stopped"))?
            .map_err(anyhow::Error::msg)
    }

    /// Counts a delivery in flight until the returned guard is dropped: a webhook
    /// handler holds it from the moment the delivery's signature is verified to its
    /// answer.
    pub fn arriving(&self) -> Arrival {
        Pressure::arriving(&self.pressure)
    }

    /// Waits, a while at most, while the acknowledgements are busy (see
    /// [`Pressure::give_way`]).
    pub async fn give_way(&self) {
        self.pressure.give_way().await;
    }

    /// A background job's turn, to hold until it ends (see [`Pressure::turn`]).
    pub async fn turn(&self) -> Option<Turn> {
        self.pressure.turn().await
    }
}

/// One writer of the lane: takes what is waiting, up to [`MAX_BATCH`], writes it as one
/// transaction, and answers each delivery once its batch is durable (or failed).
async fn write_batches(db: Database, pending: Queue) {
    // PostgreSQL: this writer's connection, opened again after a failure.
    let mut conn = None;
    loop {
        let batch = {
            let mut pending = pending.lock().await;
            let Some(first) = pending.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match pending.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let (events, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let stored = match &db {
            Database::Postgres(postgres) => {
                let write = async {
                    let conn = match &mut conn {
                        Some(conn) => conn,
                        empty => empty.insert(postgres.connect(Role::Inbox).await?),
                    };
                    store_events_postgres(conn, &events).await
                };
                // The server's statement_timeout bounds the statement; this bounds a
                // server that stopped answering. A batch given up may still commit: its
                // deliveries are answered 503, and Stripe's retries find them stored.
                let stored = match tokio::time::timeout(LANE_TIMEOUT, write).await {
                    Ok(stored) => stored,
                    Err(_) => Err(anyhow::anyhow!(
                        "PostgreSQL did not answer within {} s",
                        LANE_TIMEOUT.as_secs()
                    )),
                };
                if stored.is_err() {
                    conn = None;
                }
                stored
            }
            Database::Sqlite(_) => db.store_events(&events).await,
        };
        match stored {
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
