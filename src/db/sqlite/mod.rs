//! SQLite's one connection, shared by the whole process, with group commit.
//!
//! Callers take turns on the connection. Each turn runs inside the transaction open at
//! the time (a *group*), its own transactions becoming savepoints, and ends only once its
//! group is committed: a caller never sees success before its writes are durable. A group
//! is committed when no caller is waiting for a turn, when it has 256 turns or when it
//! is 5 ms old (see [`LIMITS`]), so one `fsync` serves every caller that arrived while the
//! previous group was being written. Under load a fulfillment costs a fraction of one
//! `fsync`; alone, a caller waits for its own commit, as before.
//!
//! Statements run on the calling thread: handing each to Tokio's blocking pool cost more
//! in thread wake-ups than the statement itself. Only a group's `BEGIN IMMEDIATE` (which
//! may wait for another process's write lock) and its `COMMIT` (which waits for the disk)
//! go to the blocking pool; inside a group nothing waits for a lock.
//!
//! Acknowledgements go first: a background turn (a fulfilment, an effect) waits at a gate
//! before it queues for the connection, so at most one background turn is ever queued
//! there, and a delivery waits for the turn on the connection and that one at most,
//! however deep the backlog of background work.
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
//! poison either leaves on the connection's mutex is cleared before the next turn. Only SQLite ending the whole transaction by itself (after a
//! disk or memory error, say) loses a group. Diesel does not notice that, and the turns
//! after it would run outside any transaction, so each group holds a marker savepoint
//! under its turns: the group commits only if the marker is still there to release, and
//! otherwise every caller of the group is told its work was not committed.

mod inline;
#[cfg(test)]
mod tests;

pub use inline::Inline;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use diesel::connection::AnsiTransactionManager;
use diesel::result::QueryResult;
use diesel::sqlite::SqliteConnection;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, TransactionManager};
use futures_util::FutureExt;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, watch};

/// The connection every query runs on.
pub type Connection = SyncConnectionWrapper<SqliteConnection, Inline>;
type Manager = <Connection as AsyncConnection>::TransactionManager;
/// What a group's commit came to, once it came: `None` while the group is open.
type Outcome = Option<Result<(), Arc<str>>>;

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

/// How deep a group's own transactions go: `BEGIN IMMEDIATE`, then the marker.
const GROUP_DEPTH: u32 = 2;

/// The shared connection and its committer.
pub struct Sqlite {
    writer: Arc<Mutex<Writer>>,
    /// Passed by background turns, one at a time, on their way to `writer`.
    background: Mutex<()>,
    limits: Limits,
    /// Callers waiting for a turn.
    waiting: AtomicUsize,
    commit_now: Notify,
}

struct Writer {
    /// Where the database lives, to open the connection again if it breaks.
    path: String,
    conn: Connection,
    /// Where the connection's work runs.
    inline: Inline,
    group: Option<Group>,
    limits: Limits,
}

struct Group {
    turns: usize,
    opened: Instant,
    limits: Limits,
    outcome: watch::Sender<Outcome>,
}

/// Which callers a turn may be queued behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Storing deliveries before they are acknowledged: queued behind at most one
    /// background turn.
    Acknowledgement,
    /// Everything else.
    Background,
}

/// A caller's turn on the connection; see [`Turn::durable`].
pub struct Turn<'a> {
    sqlite: &'a Sqlite,
    writer: OwnedMutexGuard<Writer>,
    outcome: watch::Receiver<Outcome>,
}

impl Sqlite {
    /// Takes over `conn`, opened on `path`, and starts its committer on the current
    /// runtime.
    pub fn new(conn: SqliteConnection, path: &str) -> Arc<Self> {
        Self::with_limits(conn, path, LIMITS)
    }

    fn with_limits(conn: SqliteConnection, path: &str, limits: Limits) -> Arc<Self> {
        let inline = Inline::default();
        let sqlite = Arc::new(Self {
            writer: Arc::new(Mutex::new(Writer {
                path: path.to_owned(),
                conn: SyncConnectionWrapper::with_runtime(conn, inline.clone()),
                inline,
                group: None,
                limits,
            })),
            background: Mutex::new(()),
            limits,
            waiting: AtomicUsize::new(0),
            commit_now: Notify::new(),
        });
        tokio::spawn(commit_groups(Arc::downgrade(&sqlite)));
        sqlite
    }

    /// Waits for a turn, inside the open group (or a new one), behind at most one
    /// background turn.
    pub async fn turn(&self, lane: Lane) -> anyhow::Result<Turn<'_>> {
        let mut writer = {
            let waiting = Waiting::on(self);
            let writer = match lane {
                Lane::Acknowledgement => Arc::clone(&self.writer).lock_owned().await,
                Lane::Background => {
                    let _gate = self.background.lock().await;
                    Arc::clone(&self.writer).lock_owned().await
                }
            };
            waiting.served();
            writer
        };
        if writer.group.as_ref().is_none_or(Group::due) {
            let (returned, opened) = tokio::spawn(async move {
                let opened = writer.open().await;
                (writer, opened)
            })
            .await
            .map_err(|e| anyhow!("opening a SQLite transaction failed: {e}"))?;
            writer = returned;
            if let Err(error) = opened {
                self.commit_now.notify_one();
                return Err(error);
            }
        }
        let outcome = writer.join().await?;
        Ok(Turn {
            sqlite: self,
            writer,
            outcome,
        })
    }
}

impl Turn<'_> {
    /// The connection, for this turn's queries.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.writer.conn
    }

    /// Ends the turn and waits until its group is committed.
    pub async fn durable(self) -> anyhow::Result<()> {
        let mut outcome = self.outcome.clone();
        drop(self);
        let committed = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| anyhow!("the SQLite committer has stopped"))?;
        match committed.as_ref() {
            Some(Err(error)) => Err(anyhow!("could not commit to SQLite: {error}")),
            _ => Ok(()),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // A turn that waits commits a due group itself, before it joins.
        if self.sqlite.waiting.load(Ordering::SeqCst) == 0 {
            self.sqlite.commit_now.notify_one();
        }
    }
}

impl Group {
    fn due(&self) -> bool {
        self.turns >= self.limits.turns || self.opened.elapsed() >= self.limits.age
    }
}

impl Writer {
    /// Commits the open group if it is due, and opens one if none is open.
    async fn open(&mut self) -> anyhow::Result<()> {
        if self.group.as_ref().is_some_and(Group::due) {
            self.commit().await;
        }
        if self.group.is_some() {
            return Ok(());
        }
        // What a failed commit or recovery left open is rolled back first.
        self.heal().await;
        if !matches!(depth(&mut self.conn), Ok(0)) {
            self.recover().await;
        }
        let blocking = Blocking::on(&self.inline);
        let began = self
            .conn
            .spawn_blocking(|conn| {
                AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN IMMEDIATE")
            })
            .await;
        drop(blocking);
        began.context("could not begin a SQLite transaction")?;
        if let Err(error) = Manager::begin_transaction(&mut self.conn).await {
            self.recover().await;
            return Err(error).context("could not mark a SQLite transaction");
        }
        self.group = Some(Group {
            turns: 0,
            opened: Instant::now(),
            limits: self.limits,
            outcome: watch::Sender::new(None),
        });
        Ok(())
    }

    /// Joins the open group, after undoing what an abandoned turn left.
    async fn join(&mut self) -> anyhow::Result<watch::Receiver<Outcome>> {
        self.heal().await;
        if let Err(error) = self.roll_back_abandoned().await {
            // The group's work is lost or unknown: its callers are told, none joins it.
            if let Some(group) = self.group.take() {
                group
                    .outcome
                    .send_replace(Some(Err(Arc::from(error.to_string()))));
            }
            self.recover().await;
            return Err(error).context("the SQLite transaction was lost");
        }
        let group = self
            .group
            .as_mut()
            .context("no SQLite transaction is open")?;
        group.turns += 1;
        Ok(group.outcome.subscribe())
    }

    /// Rolls back the savepoints a turn left open, back to the group's marker; fails
    /// when the group's transaction is gone.
    async fn roll_back_abandoned(&mut self) -> QueryResult<()> {
        while depth(&mut self.conn)? > GROUP_DEPTH {
            Manager::rollback_transaction(&mut self.conn).await?;
        }
        match depth(&mut self.conn)? {
            GROUP_DEPTH => Ok(()),
            _ => Err(diesel::result::Error::NotInTransaction),
        }
    }

    /// Clears the poison a turn that panicked (writing a statement's values, or in work
    /// run on the connection) left on the wrapper's mutex, which would otherwise make
    /// every later look at the transaction state panic.
    async fn heal(&mut self) {
        // Any call through the wrapper takes its mutex, clearing the poison. Only a
        // panic would make it fail.
        if let Err(error) = self.conn.spawn_blocking(|_| Ok(())).await {
            tracing::error!(%error, "could not reach SQLite after a turn panicked");
        }
    }

    /// Commits the open group, if any, and tells its callers how that went.
    async fn commit(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        self.heal().await;
        let committed = match self.roll_back_abandoned().await {
            // Releasing the marker fails if SQLite ended the transaction by itself.
            Ok(()) => match Manager::commit_transaction(&mut self.conn).await {
                Ok(()) => {
                    let _blocking = Blocking::on(&self.inline);
                    Manager::commit_transaction(&mut self.conn).await
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let outcome = match committed {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(error = %error, turns = group.turns, "could not commit to SQLite");
                self.recover().await;
                Err(Arc::from(error.to_string()))
            }
        };
        group.outcome.send_replace(Some(outcome));
    }
}

impl Writer {
    /// Leaves no transaction behind for the next group: rolls back what is open, or opens
    /// the connection again when it cannot (its transaction state is broken).
    async fn recover(&mut self) {
        self.heal().await;
        while depth(&mut self.conn).is_ok_and(|depth| depth > 0) {
            if Manager::rollback_transaction(&mut self.conn).await.is_err() {
                break;
            }
        }
        if depth(&mut self.conn).is_ok_and(|depth| depth == 0) {
            return;
        }
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || super::open_sqlite(&path)).await {
            Ok(Ok(conn)) => {
                self.conn = SyncConnectionWrapper::with_runtime(conn, self.inline.clone());
                tracing::warn!("SQLite connection opened again after a failed commit");
            }
            Ok(Err(error)) => {
                tracing::error!(error = %format!("{error:#}"), "could not open SQLite again");
            }
            Err(error) => tracing::error!(%error, "could not open SQLite again"),
        }
    }
}

/// How many transactions deep the connection is (0: none open).
fn depth(conn: &mut Connection) -> QueryResult<u32> {
    Ok(Manager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .map_or(0, |depth| depth.get()))
}

/// Commits a group whenever a turn asks, and any group left open, for as long as the
/// connection lives.
async fn commit_groups(connection: Weak<Sqlite>) {
    while let Some(sqlite) = connection.upgrade() {
        let asked = tokio::time::timeout(sqlite.limits.sweep, sqlite.commit_now.notified())
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
            writer.recover().await;
        }
    }
}

/// Sends the connection's work to the blocking pool for as long as it lives, even if
/// the task holding it is dropped at an `.await`.
struct Blocking(Arc<AtomicBool>);

impl Blocking {
    fn on(inline: &Inline) -> Self {
        inline.blocking.store(true, Ordering::SeqCst);
        Self(Arc::clone(&inline.blocking))
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Counts a caller as waiting for a turn for as long as it lives, even if the caller is
/// cancelled while waiting.
struct Waiting<'a> {
    sqlite: &'a Sqlite,
    served: bool,
}

impl<'a> Waiting<'a> {
    fn on(sqlite: &'a Sqlite) -> Self {
        sqlite.waiting.fetch_add(1, Ordering::SeqCst);
        Self {
            sqlite,
            served: false,
        }
    }

    /// The caller has its turn.
    fn served(mut self) {
        self.served = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let last = self.sqlite.waiting.fetch_sub(1, Ordering::SeqCst) == 1;
        // The last turn left the group for this caller to carry on, and it went away.
        if last && !self.served {
            self.sqlite.commit_now.notify_one();
        }
    }
}
