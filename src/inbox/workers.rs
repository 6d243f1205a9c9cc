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
use tracing::Instrument;

use super::Inbox;
use crate::actors::Sessions;
use crate::db::inbox::StoredEvent;
use crate::db::{Database, millis, now_ms};
use crate::domain::{AccountId, ReversalNews, SessionId};
use crate::fulfillment::Trigger;
use crate::stripe::event::{self, Event};
use crate::telemetry;

mod attempt;
mod claims;

use attempt::{CONTENDED_RETRY, record_failure};
pub use attempt::{process, reverse};

/// Events waiting for each worker before the rest wait in the inbox only.
const QUEUE_PER_WORKER: usize = 16;
const REPLAY_PAGE: i64 = 500;
/// Events claimed with one statement at most.
const CLAIM_BATCH: usize = 64;
/// How long a claim holds unless renewed; it is renewed every third of it, and events
/// whose claim ran out are looked for as often.
const EVENT_LEASE: Duration = Duration::from_secs(6);

/// A stored event for a worker to carry out.
pub struct Work {
    pub event_id: String,
    pub job: Job,
    /// For a replayed event: carried out only if, when it is claimed, it is still
    /// waiting and due by then (a page is read long before its last event is queued).
    pub due_by: Option<i64>,
    /// The trace of the delivery that stored it, when traces are exported.
    pub trace: Option<opentelemetry::Context>,
}

/// What a stored event asks for.
pub enum Job {
    /// A Checkout event: the trigger for its session.
    Checkout {
        session_id: SessionId,
        trigger: Trigger,
    },
    /// Refund news, from the connected account that sent it, if any.
    Refund {
        news: ReversalNews,
        account: Option<AccountId>,
    },
}

impl Job {
    /// What a parsed event asks for; `None` for an event fulfilld does not act on.
    pub fn of(event: Event) -> Option<Self> {
        match event {
            Event::Checkout { kind, summary, .. } => Some(Self::Checkout {
                session_id: summary.id.clone(),
                trigger: Trigger::from_event(kind, summary),
            }),
            Event::Refund { news, account, .. } => Some(Self::Refund { news, account }),
            Event::Ignored { .. } => None,
        }
    }
}

impl Work {
    /// What a stored event asks for, or `None` (and the event is set aside) when it is not
    /// one fulfilld acts on.
    pub async fn of(db: &Database, stored: StoredEvent) -> Option<Self> {
        match event::parse(stored.payload.as_bytes())
            .ok()
            .and_then(Job::of)
        {
            Some(job) => Some(Self {
                event_id: stored.id,
                job,
                due_by: None,
                trace: None,
            }),
            None => {
                // Only verified events fulfilld acts on are stored; this row predates a
                // change of rules. Keep it out of every future replay.
                tracing::warn!(event.id = %stored.id, "stored event is not one fulfilld acts on; skipping it");
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
                    // Acknowledgements first: while they are busy, a few jobs at a time
                    // (its batch's claim does not wait as well).
                    let _turn = inbox.turn().await;
                    let event_id = job.event_id.clone();
                    let span = telemetry::child_of(
                        job.trace.clone(),
                        || tracing::info_span!("event", event.id = %event_id),
                    );
                    // A task of its own, so that a panic ends one attempt, not the pool.
                    let attempt = tokio::spawn({
                        let db = db.clone();
                        async move {
                            match job.job {
                                Job::Checkout {
                                    session_id,
                                    trigger,
                                } => {
                                    process(&sessions, &db, &job.event_id, &session_id, trigger)
                                        .await
                                }
                                Job::Refund { news, account } => {
                                    reverse(&sessions, &db, &job.event_id, &news, account).await
                                }
                            }
                        }
                        .instrument(span)
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
