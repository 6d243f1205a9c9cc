//! Group commit on PostgreSQL, for the short write transactions of background work (a
//! fulfilment's record): those that arrive together share one transaction and one
//! `COMMIT`, and so one WAL flush, as every turn does on SQLite.
//!
//! Turns take the open group's connection one at a time, the transactions they open
//! becoming savepoints. Under them lies a marker savepoint of the group's own, released
//! and taken again as each turn ends: a turn whose statement failed outside a savepoint of
//! its own (which leaves PostgreSQL's transaction aborted) is rolled back to the marker
//! and told so, and the turns before it are kept. A caller returns only once its group is
//! committed. A group is committed when no caller waits, when it has 256 turns or when
//! it is 5 ms old; its `COMMIT` runs on its own while the next group opens on another
//! connection, so turns never queue behind a commit.
//!
//! A turn abandoned half-way (a cancelled caller) may have left a statement in flight,
//! and diesel-async then trusts its connection no more: its group is committed without
//! it (rolled back to the marker first) and the connection is closed.
//!
//! A turn that meets a row lock waits at most [`LOCK_TIMEOUT`], which every later turn
//! of its group waits with it: PostgreSQL then fails the statement, the turn's savepoint
//! is rolled back, and its caller puts the work off, as it does for any lock timeout.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use diesel::connection::TransactionManagerStatus;
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use tokio::runtime::Handle;
use tokio::sync::{
    Mutex, OwnedMappedMutexGuard, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, watch,
};

use super::{Opener, Role};
use crate::db::queue::{Leaving, Queue, Waiting};

type Manager = <AsyncPgConnection as AsyncConnection>::TransactionManager;
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
/// Connections of the group writer's own: the open group's, and those committing.
const CONNECTIONS: usize = 4;
/// The longest a turn waits for a connection when every one is committing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a `COMMIT` may take before its callers are told it failed (it may still
/// have happened: what they do again is idempotent).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
#[cfg(test)]
mod tests;

/// How long a turn waits for a row another session has locked; see the module's doc.
pub(super) const LOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// Opens a group: its transaction and the marker under its turns.
const BEGIN: &str = "BEGIN; SAVEPOINT fulfilld_group";
/// Keeps what the turn that ends did: fails if the turn left the transaction aborted.
const KEEP_TURN: &str = "RELEASE SAVEPOINT fulfilld_group; SAVEPOINT fulfilld_group";
/// Undoes what the turn that ends did, and keeps the turns before it.
const UNDO_TURN: &str = "ROLLBACK TO SAVEPOINT fulfilld_group";
/// Commits: releasing the marker fails on an aborted transaction, which `COMMIT` alone
/// would roll back and report as a success.
const COMMIT: &str = "RELEASE SAVEPOINT fulfilld_group; COMMIT";
const COMMIT_WITHOUT_LAST: &str =
    "ROLLBACK TO SAVEPOINT fulfilld_group; RELEASE SAVEPOINT fulfilld_group; COMMIT";

/// The group writer: its open group, its connections and its committer.
pub struct Groups {
    writer: Arc<Mutex<Writer>>,
    queue: Queue,
    connections: Arc<Connections>,
    limits: Limits,
    /// Where groups are opened and committed: the runtime connections are opened on,
    /// which lasts as long as the process.
    runtime: Handle,
}

/// The open group, if any.
struct Writer {
    open: Option<Group>,
}

/// One transaction shared by the turns that joined it.
struct Group {
    conn: Connection,
    turns: usize,
    opened: Instant,
    limits: Limits,
    outcome: watch::Sender<Outcome>,
    /// A turn took the connection and has not ended through [`Turn::durable`].
    in_turn: bool,
}

impl Group {
    fn due(&self) -> bool {
        self.turns >= self.limits.turns || self.opened.elapsed() >= self.limits.age
    }
}

/// A connection, and its place among the [`CONNECTIONS`].
struct Connection {
    conn: AsyncPgConnection,
    _permit: OwnedSemaphorePermit,
}

/// The connections not in use, and a permit for each one open.
struct Connections {
    opener: Opener,
    idle: std::sync::Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Connections {
    /// An idle connection, or a new one while fewer than [`CONNECTIONS`] are open.
    async fn take(&self) -> anyhow::Result<Connection> {
        if let Some(idle) = self.pop() {
            return Ok(idle);
        }
        let permit =
            tokio::time::timeout(CONNECT_TIMEOUT, Arc::clone(&self.permits).acquire_owned())
                .await
                .map_err(|_| anyhow!("no PostgreSQL group connection within {CONNECT_TIMEOUT:?}"))?
                .map_err(|_| anyhow!("the PostgreSQL group writer has stopped"))?;
        // One may have come back while this waited; the permit then goes unused.
        if let Some(idle) = self.pop() {
            return Ok(idle);
        }
        let conn = self.opener.open(Role::Group).await?;
        Ok(Connection {
            conn,
            _permit: permit,
        })
    }

    fn pop(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .pop()
    }

    fn put_back(&self, connection: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(connection);
    }
}

/// A caller's turn on the open group's connection; see [`Turn::durable`].
pub struct Turn<'a> {
    group: OwnedMappedMutexGuard<Writer, Group>,
    outcome: watch::Receiver<Outcome>,
    _leaving: Leaving<'a>,
}

impl Groups {
    /// The writer, whose connections `opener` opens; its committer runs on `opener`'s
    /// runtime for as long as the writer lives.
    pub(super) fn new(opener: Opener) -> Arc<Self> {
        Self::with_limits(opener, LIMITS)
    }

    fn with_limits(opener: Opener, limits: Limits) -> Arc<Self> {
        let runtime = opener.runtime.clone();
        let groups = Arc::new(Self {
            limits,
            runtime: runtime.clone(),
            writer: Arc::new(Mutex::new(Writer { open: None })),
            queue: Queue::default(),
            connections: Arc::new(Connections {
                opener,
                idle: std::sync::Mutex::default(),
                permits: Arc::new(Semaphore::new(CONNECTIONS)),
            }),
        });
        runtime.spawn(commit_groups(Arc::downgrade(&groups)));
        groups
    }

    /// Waits for a turn inside the open group, or a new one.
    pub async fn turn(&self) -> anyhow::Result<Turn<'_>> {
        let (mut writer, leaving) = {
            let waiting = Waiting::on(&self.queue);
            let writer = Arc::clone(&self.writer).lock_owned().await;
            (writer, waiting.served())
        };
        // A group is ended by age or size, or by a turn that was abandoned in it.
        if let Some(group) = writer.open.take_if(|group| group.due() || group.in_turn) {
            self.commit(group);
        }
        if writer.open.is_none() {
            // A task of its own, so that a caller that goes away does not leave a
            // connection half-opened.
            let (connections, limits) = (Arc::clone(&self.connections), self.limits);
            let (returned, opened) = self
                .runtime
                .spawn(async move {
                    let opened = open_group(&connections, limits).await;
                    (writer, opened)
                })
                .await
                .map_err(|e| anyhow!("opening a PostgreSQL transaction failed: {e}"))?;
            writer = returned;
            writer.open = Some(opened?);
        }
        let mut group = OwnedMutexGuard::try_map(writer, |writer| writer.open.as_mut())
            .map_err(|_| anyhow!("no PostgreSQL group is open"))?;
        group.turns += 1;
        group.in_turn = true;
        let outcome = group.outcome.subscribe();
        Ok(Turn {
            group,
            outcome,
            _leaving: leaving,
        })
    }

    /// Commits `group` in a task of its own; its callers learn how it went.
    fn commit(&self, group: Group) {
        self.runtime
            .spawn(commit(group, Arc::clone(&self.connections)));
    }
}

impl Turn<'_> {
    /// The connection, for this turn's queries.
    pub fn connection(&mut self) -> &mut AsyncPgConnection {
        &mut self.group.conn.conn
    }

    /// Ends the turn and waits until its group is committed. A turn that left its own
    /// transaction open, or the group's transaction aborted, is undone and told so; the
    /// turns before it are kept.
    pub async fn durable(mut self) -> anyhow::Result<()> {
        let kept = self.keep().await;
        self.group.in_turn = kept.is_err() && !self.undo().await;
        let mut outcome = self.outcome.clone();
        drop(self);
        kept?;
        let committed = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| anyhow!("the PostgreSQL group was given up"))?;
        match committed.as_ref() {
            Some(Err(error)) => Err(anyhow!("could not commit to PostgreSQL: {error}")),
            _ => Ok(()),
        }
    }

    /// Keeps what the turn did, if it ended cleanly.
    async fn keep(&mut self) -> anyhow::Result<()> {
        let conn = self.connection();
        if depth(conn)? != 1 {
            anyhow::bail!("the turn left its transaction open; what it did was rolled back");
        }
        conn.batch_execute(KEEP_TURN)
            .await
            .context("the turn left its PostgreSQL transaction aborted")
    }

    /// Rolls back what the turn did, back to the marker; false when that fails too, and
    /// the group must end without this turn's work (as if it had been abandoned).
    async fn undo(&mut self) -> bool {
        let conn = self.connection();
        while depth(conn).is_ok_and(|depth| depth > 1) {
            if Manager::rollback_transaction(conn).await.is_err() {
                return false;
            }
        }
        depth(conn).is_ok_and(|depth| depth == 1) && conn.batch_execute(UNDO_TURN).await.is_ok()
    }
}

/// Takes a connection and opens a group on it.
async fn open_group(connections: &Connections, limits: Limits) -> anyhow::Result<Group> {
    let mut connection = connections.take().await?;
    AnsiTransactionManager::begin_transaction_sql(&mut connection.conn, BEGIN)
        .await
        .context("could not begin a PostgreSQL transaction")?;
    Ok(Group {
        conn: connection,
        turns: 0,
        opened: Instant::now(),
        limits,
        outcome: watch::Sender::new(None),
        in_turn: false,
    })
}

/// Commits `group`, tells its callers how that went, and puts its connection back for
/// the next group; closes it instead when its state is not known.
async fn commit(mut group: Group, connections: Arc<Connections>) {
    let abandoned = group.in_turn;
    let sql = if abandoned {
        COMMIT_WITHOUT_LAST
    } else {
        COMMIT
    };
    let committed =
        match tokio::time::timeout(COMMIT_TIMEOUT, group.conn.conn.batch_execute(sql)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Arc::from(error.to_string())),
            Err(_) => Err(Arc::from(format!(
                "no answer to COMMIT within {COMMIT_TIMEOUT:?}"
            ))),
        };
    if let Err(error) = &committed {
        tracing::error!(%error, turns = group.turns, "could not commit to PostgreSQL");
    }
    let reusable = committed.is_ok() && !abandoned;
    group.outcome.send_replace(Some(committed));
    if reusable {
        // The transaction diesel saw begin was ended by the `COMMIT` it did not see.
        *Manager::transaction_manager_status_mut(&mut group.conn.conn) =
            TransactionManagerStatus::default();
        connections.put_back(group.conn);
    }
}

/// Commits the open group whenever the last turn leaves it, and any group left open, for
/// as long as the writer lives.
async fn commit_groups(groups: Weak<Groups>) {
    while let Some(writer) = groups.upgrade() {
        let sweep = writer.limits.sweep;
        let asked = tokio::time::timeout(sweep, writer.queue.commit_now.notified())
            .await
            .is_ok();
        let mut open = writer.writer.lock().await;
        let forgotten = open
            .open
            .as_ref()
            .is_some_and(|group| group.opened.elapsed() >= sweep);
        if (asked || forgotten)
            && let Some(group) = open.open.take()
        {
            writer.commit(group);
        }
    }
}

/// How many transactions deep the connection is, as diesel counts (0: none open).
fn depth(conn: &mut AsyncPgConnection) -> diesel::QueryResult<u32> {
    Ok(Manager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .map_or(0, |depth| depth.get()))
}
