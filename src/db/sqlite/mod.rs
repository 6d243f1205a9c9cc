//! SQLite's one connection, shared by the whole process, with group commit.
//!
//! Callers take turns on the connection. Each turn runs inside the transaction open at
//! the time (a *group*), its own transactions becoming savepoints, and ends only once its
//! group is committed: a caller never sees success before its writes are durable. A group
//! is committed when no caller is waiting for a turn, when it has 256 turns or when it
//! is 5 ms old (see [`LIMITS`]). Its `COMMIT` only writes the WAL; the WAL is synced off
//! the connection (see [`wal`]), while the next group runs, and one `fdatasync` serves
//! every group committed while the one before it ran. Under load a fulfillment costs a
//! fraction of one sync; alone, a caller waits for its own commit and sync, as before. A
//! caller may instead wait only until its group is written ([`Commit::Written`]), which
//! a process killed after it cannot undo but a power cut can; a group whose callers all
//! do is not synced at all, and the next sync covers it.
//!
//! Statements run on the calling thread: handing each to Tokio's blocking pool cost more
//! in thread wake-ups than the statement itself. Only a group's `BEGIN IMMEDIATE` (which
//! may wait for another process's write lock) and its `COMMIT` (which may checkpoint) go
//! to the blocking pool; inside a group nothing waits for a lock.
//!
//! Acknowledgements go first: a background turn (a fulfilment, an effect) waits at a gate
//! before it queues for the connection, so at most one background turn is ever queued
//! there, and a delivery waits for the turn on the connection and that one at most,
//! however deep the backlog of background work. The one exception is marking attempts
//! done ([`Lane::Settlement`]): the next receipt waits for it, and its four writers'
//! turns are short, so it queues as deliveries do, and a delivery may wait for those
//! four as well.
//!
//! Opening a group (and committing one that is due) runs as a task of its own, which
//! a caller that goes away cannot cut short. A turn abandoned half-way (an error returned
//! early, a cancelled future) leaves its savepoints open; the next turn rolls them back,
//! so what it did not finish is undone and the rest of its group is kept. A commit that
//! fails is reported to every caller of its group; if it left the connection unusable,
//! the connection is opened again.
//!
//! One turn failing never fails its group: an error, a cancellation or a panic is undone
//! by rolling back to its savepoints. Work that panics on the connection is answered
//! with an error (see [`Inline`]); a panic elsewhere in a turn abandons it; and the
//! poison either leaves on the connection's mutex is cleared before the next turn.
//!
//! Only SQLite ending the whole transaction by itself (after a disk or memory error, or a
//! trigger's `RAISE(ROLLBACK)`) loses a group. Diesel does not always notice that, and a
//! turn after it would run outside any transaction, so each group holds a marker
//! savepoint of its own name under its turns, released and taken again as each turn ends
//! (or, after a turn that was abandoned, before the next joins) and released at the
//! commit. When it is gone, every caller of the lost group is told its work was not
//! committed, and a caller about to join opens a new group instead. A turn that carries
//! on after the loss within itself runs in autocommit until it ends: what it wrote then
//! is durable although its caller is told it failed, never the reverse.

mod inline;
mod queue;
#[cfg(test)]
mod tests;
mod wal;
mod writer;

pub use inline::Inline;
use writer::{Group, Writer};

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::anyhow;
use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncConnection;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use futures_util::FutureExt;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use queue::{Leaving, Queue, Waiting};
use wal::{Unsynced, Wal};

/// The connection every query runs on.
pub type Connection = SyncConnectionWrapper<SqliteConnection, Inline>;
type Manager = <Connection as AsyncConnection>::TransactionManager;
/// What a group's commit came to so far.
#[derive(Debug, Clone, Default)]
enum Outcome {
    /// The group is open.
    #[default]
    Open,
    /// Its commit failed: nothing of it is kept.
    Failed(Arc<str>),
    /// Committed, and waiting for the WAL's sync.
    Written,
    /// Committed, and the WAL's sync failed.
    Unsynced(Arc<str>),
    /// Committed and synced.
    Durable,
}

impl Outcome {
    /// What a caller waiting for its group to be `wanted` is told; `None` while it waits.
    fn answer(&self, wanted: Commit) -> Option<anyhow::Result<()>> {
        match (self, wanted) {
            (Self::Open, _) | (Self::Written, Commit::Durable) => None,
            (Self::Written | Self::Unsynced(_), Commit::Written) | (Self::Durable, _) => {
                Some(Ok(()))
            }
            (Self::Failed(error), _) => Some(Err(anyhow!("could not commit to SQLite: {error}"))),
            (Self::Unsynced(error), Commit::Durable) => Some(Err(anyhow!(
                "committed to SQLite, but not known to be on the disk: {error}"
            ))),
        }
    }
}

/// How far a group's commit has gone, and how far a caller waits for it to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// In the WAL, through the operating system: kept if the process dies, not
    /// necessarily if the machine loses power.
    Written,
    /// On the disk.
    Durable,
}

/// How large and how old a group may grow.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Turns in one group at most: bounds how long the first caller waits.
    turns: usize,
    /// A group older than this is committed before the next turn, however many wait.
    age: Duration,
    /// How often the committer looks for a group nobody asked it to commit.
    sweep: Duration,
}

const LIMITS: Limits = Limits {
    turns: 256,
    age: Duration::from_millis(5),
    sweep: Duration::from_millis(50),
};

/// How deep a group's own transaction goes, as diesel counts: `BEGIN IMMEDIATE`. The
/// marker savepoint under the turns is the group's own, unknown to diesel.
const GROUP_DEPTH: u32 = 1;

/// The shared connection and its committer.
pub struct Sqlite {
    writer: Arc<Mutex<Writer>>,
    /// Passed by background turns, one at a time, on their way to `writer`.
    background: Mutex<()>,
    limits: Limits,
    queue: Queue,
    /// Set once the WAL could not be synced: no turn is taken after that.
    unsynced: Unsynced,
}

/// Which callers a turn may be queued behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Storing deliveries before they are acknowledged: queued behind at most one
    /// background turn and the settlements' (four at most).
    Acknowledgement,
    /// Recording attempts that are over (see `effects::settle`): queued as
    /// acknowledgements are. The next receipt waits for the one before to be recorded
    /// (the SMTP sync gap), and the writers are few, so these turns are short and few.
    Settlement,
    /// Everything else.
    Background,
}

/// A caller's turn on the connection; see [`Turn::durable`].
pub struct Turn<'a> {
    writer: OwnedMutexGuard<Writer>,
    outcome: watch::Receiver<Outcome>,
    _leaving: Leaving<'a>,
}

impl Sqlite {
    /// Takes over `conn`, opened on `path`, and starts its committer and the WAL's
    /// syncer on the current runtime.
    pub fn new(conn: SqliteConnection, path: &str) -> anyhow::Result<Arc<Self>> {
        Self::with_limits(conn, path, LIMITS)
    }

    fn with_limits(
        conn: SqliteConnection,
        path: &str,
        limits: Limits,
    ) -> anyhow::Result<Arc<Self>> {
        Self::with_sync(conn, path, limits, None)
    }

    /// As [`Sqlite::with_limits`], with `sync` standing in for the WAL's `fdatasync` when
    /// given.
    fn with_sync(
        mut conn: SqliteConnection,
        path: &str,
        limits: Limits,
        sync: Option<wal::Sync>,
    ) -> anyhow::Result<Arc<Self>> {
        let unsynced = Unsynced::default();
        let wal = writer::sync_off_commit(&mut conn)?.map(|file| match sync {
            Some(sync) => Wal::with_sync(file, sync, Arc::clone(&unsynced)),
            None => Wal::start(file, Arc::clone(&unsynced)),
        });
        let inline = Inline::default();
        let sqlite = Arc::new(Self {
            writer: Arc::new(Mutex::new(Writer {
                path: path.to_owned(),
                conn: SyncConnectionWrapper::with_runtime(conn, inline.clone()),
                inline,
                group: None,
                limits,
                checked: false,
                wal,
            })),
            background: Mutex::new(()),
            limits,
            queue: Queue::default(),
            unsynced,
        });
        tokio::spawn(commit_groups(Arc::downgrade(&sqlite)));
        Ok(sqlite)
    }

    /// Waits for a turn, inside the open group (or a new one), behind at most one
    /// background turn and four settlements.
    pub async fn turn(&self, lane: Lane) -> anyhow::Result<Turn<'_>> {
        if let Some(error) = self.unsynced.get() {
            anyhow::bail!("SQLite is not in use until fulfilld is restarted: {error}");
        }
        let (mut writer, leaving) = {
            let waiting = Waiting::on(&self.queue);
            let writer = match lane {
                Lane::Acknowledgement | Lane::Settlement => {
                    Arc::clone(&self.writer).lock_owned().await
                }
                Lane::Background => {
                    let _gate = self.background.lock().await;
                    Arc::clone(&self.writer).lock_owned().await
                }
            };
            (writer, waiting.served())
        };
        // A lost group is told to its callers; this caller, who wrote nothing in it,
        // joins a new one.
        let mut lost = false;
        loop {
            if writer.group.as_ref().is_none_or(Group::due) {
                let (returned, opened) = tokio::spawn(async move {
                    let opened = writer.open().await;
                    (writer, opened)
                })
                .await
                .map_err(|e| anyhow!("opening a SQLite transaction failed: {e}"))?;
                writer = returned;
                opened?;
            }
            match writer.join().await {
                Ok(outcome) => {
                    return Ok(Turn {
                        writer,
                        outcome,
                        _leaving: leaving,
                    });
                }
                Err(error) if lost => return Err(error),
                Err(_) => lost = true,
            }
        }
    }
}

impl Turn<'_> {
    /// The connection, for this turn's queries.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.writer.conn
    }

    /// Ends the turn and waits until its group's commit has gone as far as `wanted`. A
    /// turn that left its own transaction open is undone and told so, and so is one whose
    /// group SQLite ended under it: the group's commit would not include it.
    pub async fn ended(mut self, wanted: Commit) -> anyhow::Result<()> {
        let ended = self.writer.end_turn(wanted).await;
        let mut outcome = self.outcome.clone();
        drop(self);
        ended?;
        let answered = outcome
            .wait_for(|outcome| outcome.answer(wanted).is_some())
            .await
            .map_err(|_| anyhow!("the SQLite committer has stopped"))?;
        answered.answer(wanted).unwrap_or(Ok(()))
    }
}

/// Commits a group whenever a turn asks, and any group left open, for as long as the
/// connection lives.
async fn commit_groups(connection: Weak<Sqlite>) {
    while let Some(sqlite) = connection.upgrade() {
        let asked = tokio::time::timeout(sqlite.limits.sweep, sqlite.queue.commit_now.notified())
            .await
            .is_ok();
        let mut writer = sqlite.writer.lock().await;
        let forgotten = writer
            .group
            .as_ref()
            .is_some_and(|group| group.opened.elapsed() >= sqlite.limits.sweep);
        if (asked || forgotten)
            && AssertUnwindSafe(writer.commit())
                .catch_unwind()
                .await
                .is_err()
        {
            // Its callers learn that the commit failed (their `Sender` is gone); the
            // connection's state is unknown.
            tracing::error!("committing to SQLite panicked");
            writer.group = None;
            if AssertUnwindSafe(writer.recover())
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("recovering the SQLite connection panicked");
            }
        }
    }
}
