//! The webhook inbox: events are stored before they are acknowledged, in a lane of
//! their own that no background work gets in front of; carried out after by a bounded
//! pool of workers through the session actors ([`workers`]), one replica at a time; and
//! replayed if a crash, an outage or a full queue left them undone.

mod workers;

pub use workers::{Work, Workers, process};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use crate::db::Database;
use crate::db::inbox::{Stored, StoredEvent, store_events_postgres};
use crate::db::postgres::Role;

/// Events written in one transaction at most.
const MAX_BATCH: usize = 512;
/// The longest a batch may take on PostgreSQL before its deliveries are answered 503.
const LANE_TIMEOUT: Duration = Duration::from_secs(6);
/// Deliveries waiting for the writer before the webhook handler waits for room.
const QUEUE_DEPTH: usize = 8192;
/// Connections of the acknowledgement lane's own on PostgreSQL: while one batch waits
/// for its commit, the next is written on the other.
const POSTGRES_LANES: usize = 2;
/// Deliveries waiting in the lane beyond which the workers give way (see
/// [`Inbox::give_way`]).
const BUSY_AT: usize = 64;
/// The longest a worker gives way before it takes its next event all the same.
const GIVE_WAY_AT_MOST: Duration = Duration::from_millis(50);

type Pending = (StoredEvent, oneshot::Sender<Result<Stored, String>>);
type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>;

/// A handle to the acknowledgement lane; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    queue: mpsc::Sender<Pending>,
    pressure: Arc<Pressure>,
}

/// How busy the lane is, for the workers to give way.
#[derive(Default)]
struct Pressure {
    /// Deliveries handed to the lane and not answered yet.
    waiting: AtomicUsize,
    /// Told when `waiting` falls to [`BUSY_AT`] or below.
    calm: Notify,
}

impl Pressure {
    fn answered(&self, count: usize) {
        let before = self.waiting.fetch_sub(count, Ordering::SeqCst);
        if before > BUSY_AT && before - count <= BUSY_AT {
            self.calm.notify_waiters();
        }
    }
}

/// A delivery counted as waiting until the writer has it, even if the handler is dropped
/// while it waits for room in the queue.
struct Waiting<'a> {
    pressure: &'a Pressure,
    handed_over: bool,
}

impl<'a> Waiting<'a> {
    fn on(pressure: &'a Pressure) -> Self {
        pressure.waiting.fetch_add(1, Ordering::SeqCst);
        Self {
            pressure,
            handed_over: false,
        }
    }

    fn handed_over(mut self) {
        self.handed_over = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.pressure.answered(1);
        }
    }
}

impl Inbox {
    /// Starts the lane's writers on the current runtime: on SQLite one, whose turns go
    /// ahead of every background turn; on PostgreSQL [`POSTGRES_LANES`], each on a
    /// connection of its own, outside the pool the background work uses.
    pub fn start(db: Database) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        let pending: Queue = Arc::new(tokio::sync::Mutex::new(pending));
        let lane = Arc::new(Pressure::default());
        let writers = match db {
            Database::Sqlite(_) => 1,
            Database::Postgres(_) => POSTGRES_LANES,
        };
        for _ in 0..writers {
            tokio::spawn(write_batches(
                db.clone(),
                Arc::clone(&pending),
                Arc::clone(&lane),
            ));
        }
        Self {
            queue,
            pressure: lane,
        }
    }

    /// Stores one event durably. Concurrent deliveries share a commit.
    pub async fn store(&self, event: StoredEvent) -> anyhow::Result<Stored> {
        let (reply, stored) = oneshot::channel();
        let waiting = Waiting::on(&self.pressure);
        if self.queue.send((event, reply)).await.is_err() {
            anyhow::bail!("the inbox writer has stopped");
        }
        // The writer counts it from here: it answers the delivery whatever becomes of us.
        waiting.handed_over();
        stored
            .await
            .map_err(|_| anyhow::anyhow!("the inbox writer has stopped"))?
            .map_err(anyhow::Error::msg)
    }

    /// Waits, [`GIVE_WAY_AT_MOST`] at most, while more than [`BUSY_AT`] deliveries wait
    /// for the lane: background work gives way to acknowledgements, never the reverse.
    pub async fn give_way(&self) {
        let calm = self.pressure.calm.notified();
        if self.pressure.waiting.load(Ordering::SeqCst) > BUSY_AT {
            let _ = tokio::time::timeout(GIVE_WAY_AT_MOST, calm).await;
        }
    }
}

/// One writer of the lane: takes what is waiting, up to [`MAX_BATCH`], writes it as one
/// transaction, and answers each delivery once its batch is durable (or failed).
async fn write_batches(db: Database, pending: Queue, lane: Arc<Pressure>) {
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
        lane.answered(replies.len());
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
