//! SQLite's one connection, shared by the whole process, with group commit.
//!
//! Callers take turns on the connection. Each turn runs inside the transaction open at
//! the time (a *group*), its own transactions becoming savepoints, and ends only once its
//! group is committed: a caller never sees success before its writes are durable. A group
//! is committed when no caller is waiting for a turn, when it has [`MAX_TURNS`] turns or
//! when it is [`MAX_AGE`] old, so one `fsync` serves every caller that arrived while the
//! previous group was being written. Under load a fulfillment costs a fraction of one
//! `fsync`; alone, a caller waits for its own commit, as before.
//!
//! Statements run on the calling thread: handing each to Tokio's blocking pool cost more
//! in thread wake-ups than the statement itself. Only a group's `BEGIN IMMEDIATE` (which
//! may wait for another process's write lock) and its `COMMIT` (which waits for the disk)
//! go to the blocking pool; inside a group nothing waits for a lock.
//!
//! A turn abandoned half-way (an error returned early, a cancelled future) leaves its
//! savepoints open; the next turn rolls them back, so what it did not finish is undone
//! and the rest of its group is kept.

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use diesel::connection::AnsiTransactionManager;
use diesel::result::QueryResult;
use diesel::sqlite::SqliteConnection;
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use diesel_async::{AsyncConnection, TransactionManager};
use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, MutexGuard, Notify, watch};

/// The connection every query runs on.
pub type Connection = SyncConnectionWrapper<SqliteConnection, Inline>;
type Manager = <Connection as AsyncConnection>::TransactionManager;
/// What a group's commit came to, once it came: `None` while the group is open.
type Outcome = Option<Result<(), Arc<str>>>;

/// Turns in one group at most: bounds how long the first caller waits.
const MAX_TURNS: usize = 256;
/// A group older than this is committed after the current turn, however many wait.
const MAX_AGE: Duration = Duration::from_millis(5);
/// How often the committer looks for a group nobody asked it to commit.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// The shared connection and its committer.
pub struct Sqlite {
    writer: Mutex<Writer>,
    /// Callers waiting for a turn.
    waiting: AtomicUsize,
    commit_now: Notify,
}

struct Writer {
    conn: Connection,
    /// Set while the connection's work must go to the blocking pool.
    blocking: Arc<AtomicBool>,
    group: Option<Group>,
}

struct Group {
    turns: usize,
    opened: Instant,
    outcome: watch::Sender<Outcome>,
}

/// A caller's turn on the connection; see [`Turn::durable`].
pub struct Turn<'a> {
    sqlite: &'a Sqlite,
    writer: MutexGuard<'a, Writer>,
    outcome: watch::Receiver<Outcome>,
}

impl Sqlite {
    /// Takes over `conn` and starts its committer on the current runtime.
    pub fn new(conn: SqliteConnection) -> Arc<Self> {
        let inline = Inline::default();
        let sqlite = Arc::new(Self {
            writer: Mutex::new(Writer {
                blocking: Arc::clone(&inline.blocking),
                conn: SyncConnectionWrapper::with_runtime(conn, inline),
                group: None,
            }),
            waiting: AtomicUsize::new(0),
            commit_now: Notify::new(),
        });
        tokio::spawn(commit_groups(Arc::downgrade(&sqlite)));
        sqlite
    }

    /// Waits for a turn, inside the open group (or a new one).
    pub async fn turn(&self) -> anyhow::Result<Turn<'_>> {
        let mut writer = {
            let _waiting = Waiting::on(&self.waiting);
            self.writer.lock().await
        };
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
        let due = self
            .writer
            .group
            .as_ref()
            .is_none_or(|group| group.turns >= MAX_TURNS || group.opened.elapsed() >= MAX_AGE);
        if due || self.sqlite.waiting.load(Ordering::SeqCst) == 0 {
            self.sqlite.commit_now.notify_one();
        }
    }
}

impl Writer {
    /// Joins the open group, opening one if there is none, and tidies what an abandoned
    /// turn left.
    async fn join(&mut self) -> anyhow::Result<watch::Receiver<Outcome>> {
        if self.group.is_none() {
            self.blocking.store(true, Ordering::SeqCst);
            let began = self
                .conn
                .spawn_blocking(|conn| {
                    AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN IMMEDIATE")
                })
                .await;
            self.blocking.store(false, Ordering::SeqCst);
            began.context("could not begin a SQLite transaction")?;
            self.group = Some(Group {
                turns: 0,
                opened: Instant::now(),
                outcome: watch::Sender::new(None),
            });
        } else {
            self.roll_back_abandoned()
                .await
                .context("could not undo an abandoned turn")?;
        }
        let group = self
            .group
            .as_mut()
            .context("a SQLite group was just opened")?;
        group.turns += 1;
        Ok(group.outcome.subscribe())
    }

    /// Rolls back the savepoints a turn left open, back to the group's own transaction.
    async fn roll_back_abandoned(&mut self) -> QueryResult<()> {
        while depth(&mut self.conn)? > 1 {
            Manager::rollback_transaction(&mut self.conn).await?;
        }
        Ok(())
    }

    /// Commits the open group, if any, and tells its callers how that went.
    async fn commit(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        let committed = match self.roll_back_abandoned().await {
            Ok(()) => {
                self.blocking.store(true, Ordering::SeqCst);
                let committed = Manager::commit_transaction(&mut self.conn).await;
                self.blocking.store(false, Ordering::SeqCst);
                committed
            }
            Err(error) => Err(error),
        };
        let outcome = match committed {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(error = %error, turns = group.turns, "could not commit to SQLite");
                // Leave no transaction behind for the next group.
                while depth(&mut self.conn).is_ok_and(|depth| depth > 0) {
                    if Manager::rollback_transaction(&mut self.conn).await.is_err() {
                        break;
                    }
                }
                Err(Arc::from(error.to_string()))
            }
        };
        group.outcome.send_replace(Some(outcome));
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
        let asked = tokio::time::timeout(SWEEP_EVERY, sqlite.commit_now.notified())
            .await
            .is_ok();
        let mut writer = sqlite.writer.lock().await;
        let forgotten = writer
            .group
            .as_ref()
            .is_some_and(|group| group.opened.elapsed() >= SWEEP_EVERY);
        if asked || forgotten {
            writer.commit().await;
        }
    }
}

/// Counts a caller as waiting for a turn for as long as it lives, even if the caller is
/// cancelled while waiting.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs the connection's work where it is asked for, or on Tokio's blocking pool while
/// `blocking` is set.
#[derive(Default)]
pub struct Inline {
    blocking: Arc<AtomicBool>,
}

type TaskResult<R> = Result<R, Box<dyn Error + Send + Sync + 'static>>;

impl SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, TaskResult<R>>
    where
        R: Send + 'static,
    {
        if self.blocking.load(Ordering::SeqCst) {
            let task = tokio::task::spawn_blocking(task);
            Box::pin(async move { task.await.map_err(|e| Box::new(e) as _) })
        } else {
            Box::pin(std::future::ready(Ok(task())))
        }
    }

    fn get_runtime() -> Self {
        Self::default()
    }
}
