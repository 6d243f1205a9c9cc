//! The writer: opens a group's transaction and its marker, lets turns join it, commits
//! it, and leaves the connection usable whatever a turn or SQLite itself did to it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::connection::{AnsiTransactionManager, TransactionManagerStatus};
use diesel::result::QueryResult;
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use diesel::{QueryableByName, RunQueryDsl};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{SimpleAsyncConnection, TransactionManager};
use tokio::sync::watch;

use super::wal::Wal;
use super::{Commit, Connection, GROUP_DEPTH, Inline, Limits, Manager, Outcome};

/// Taken under each group's turns, released and taken again as each turn ends (and before
/// a turn joins after one was abandoned), and released at the commit: a name no turn
/// uses, gone only if the transaction is.
const MARKER: &str = "SAVEPOINT fulfilld_group";
const CHECK_MARKER: &str = "RELEASE fulfilld_group; SAVEPOINT fulfilld_group";
const RELEASE_MARKER: &str = "RELEASE fulfilld_group";

/// The connection, and the group open on it.
pub(super) struct Writer {
    /// Where the database lives, to open the connection again if it breaks.
    pub(super) path: String,
    pub(super) conn: Connection,
    /// Where the connection's work runs.
    pub(super) inline: Inline,
    pub(super) group: Option<Group>,
    pub(super) limits: Limits,
    /// The group's marker was checked since the last turn joined: that turn ended
    /// through [`Writer::end_turn`], or none has joined yet.
    pub(super) checked: bool,
    /// Where committed groups go to be synced; `None` when the database has no WAL (in
    /// memory), and a commit is all there is.
    pub(super) wal: Option<Wal>,
}

/// One transaction shared by the turns that joined it.
pub(super) struct Group {
    turns: usize,
    /// A turn that ended in it waits for the disk: its commit is handed to the syncer.
    /// A group whose turns all waited only for their commit (done marks) is not: the
    /// next sync, begun for a group that needs one, covers it too.
    sync: bool,
    pub(super) opened: Instant,
    limits: Limits,
    outcome: watch::Sender<Outcome>,
}

impl Group {
    pub(super) fn due(&self) -> bool {
        self.turns >= self.limits.turns || self.opened.elapsed() >= self.limits.age
    }
}

impl Writer {
    /// Commits the open group if it is due, and opens one if none is open.
    pub(super) async fn open(&mut self) -> anyhow::Result<()> {
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
        if let Err(error) = began {
            // The task may have failed after SQLite began: leave nothing open.
            self.recover().await;
            return Err(error).context("could not begin a SQLite transaction");
        }
        if let Err(error) = self.conn.batch_execute(MARKER).await {
            self.recover().await;
            return Err(error).context("could not mark a SQLite transaction");
        }
        self.checked = true;
        self.group = Some(Group {
            turns: 0,
            sync: false,
            opened: Instant::now(),
            limits: self.limits,
            outcome: watch::Sender::new(Outcome::Open),
        });
        Ok(())
    }

    /// Joins the open group, after undoing what an abandoned turn left. When the group's
    /// transaction is gone, its callers are told, the connection is left with no
    /// transaction open, and there is no group to join.
    pub(super) async fn join(&mut self) -> anyhow::Result<watch::Receiver<Outcome>> {
        self.heal().await;
        // The last turn did not end through `end_turn`: it was abandoned.
        if !self.checked {
            self.check().await?;
        }
        self.checked = false;
        let group = self
            .group
            .as_mut()
            .context("no SQLite transaction is open")?;
        group.turns += 1;
        Ok(group.outcome.subscribe())
    }

    /// Ends a turn, whose caller waits for its group to be `wanted`: undoes what it left
    /// open and checks that its group's transaction is still there. Err when what the
    /// turn did is not part of what its group commits.
    pub(super) async fn end_turn(&mut self, wanted: Commit) -> anyhow::Result<()> {
        if wanted == Commit::Durable
            && let Some(group) = self.group.as_mut()
        {
            group.sync = true;
        }
        self.heal().await;
        let left_open = depth(&mut self.conn).is_ok_and(|depth| depth > GROUP_DEPTH);
        self.check().await?;
        if left_open {
            anyhow::bail!("the turn left its transaction open; what it did was rolled back");
        }
        Ok(())
    }

    /// Rolls back what a turn left open and checks the group's marker, taking it again
    /// above everything kept so far. When the group's transaction is gone, its callers
    /// are told and the connection is left with no transaction open.
    async fn check(&mut self) -> anyhow::Result<()> {
        let checked = match self.roll_back_abandoned().await {
            Ok(()) => self.conn.batch_execute(CHECK_MARKER).await,
            Err(error) => Err(error),
        };
        if let Err(error) = checked {
            // The group's work is lost or unknown: its callers are told, none joins it.
            if let Some(group) = self.group.take() {
                group
                    .outcome
                    .send_replace(Outcome::Failed(Arc::from(error.to_string())));
            }
            self.recover().await;
            return Err(error).context("the SQLite transaction was lost");
        }
        self.checked = true;
        Ok(())
    }

    /// Rolls back the savepoints a turn left open, back to the group's own depth; fails
    /// when diesel knows the group's transaction is gone.
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
    pub(super) async fn commit(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        self.heal().await;
        let committed = match self.roll_back_abandoned().await {
            // Releasing the marker fails if SQLite ended the transaction by itself.
            Ok(()) => match self.conn.batch_execute(RELEASE_MARKER).await {
                Ok(()) => {
                    let _blocking = Blocking::on(&self.inline);
                    Manager::commit_transaction(&mut self.conn).await
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match (committed, &self.wal) {
            (Ok(()), Some(wal)) => {
                group.outcome.send_replace(Outcome::Written);
                if group.sync {
                    wal.hand(group.outcome).await;
                }
            }
            (Ok(()), None) => {
                group.outcome.send_replace(Outcome::Durable);
            }
            (Err(error), _) => {
                tracing::error!(error = %error, turns = group.turns, "could not commit to SQLite");
                self.recover().await;
                group
                    .outcome
                    .send_replace(Outcome::Failed(Arc::from(error.to_string())));
            }
        }
    }
}

impl Writer {
    /// Leaves no transaction behind for the next group: rolls back what is open and
    /// tells diesel so, or opens the connection again when even that fails.
    pub(super) async fn recover(&mut self) {
        self.heal().await;
        match self.conn.batch_execute("ROLLBACK").await {
            Ok(()) => {}
            Err(error) if error.to_string().contains("no transaction is active") => {}
            Err(error) => {
                tracing::warn!(%error, "could not roll back on SQLite; opening it again");
                self.reopen().await;
                return;
            }
        }
        *Manager::transaction_manager_status_mut(&mut self.conn) =
            TransactionManagerStatus::default();
    }

    async fn reopen(&mut self) {
        let path = self.path.clone();
        let wal = self.wal.as_ref().map(|wal| wal.file.clone());
        let opened = tokio::task::spawn_blocking(move || {
            let mut conn = crate::db::open_sqlite(&path)?;
            // The syncer keeps syncing the WAL it was given.
            anyhow::ensure!(
                sync_off_commit(&mut conn)? == wal,
                "SQLite opened again with another write-ahead log"
            );
            anyhow::Ok(conn)
        });
        match opened.await {
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

/// Leaves syncing the WAL to [`super::wal`]: the connection's commits write the WAL
/// without waiting for the disk. Returns where SQLite keeps the WAL (beside the database
/// file, as SQLite resolved its path), or `None` when there is none (a database in
/// memory), which leaves the connection as it is.
pub(super) fn sync_off_commit(conn: &mut SqliteConnection) -> anyhow::Result<Option<PathBuf>> {
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    #[derive(QueryableByName)]
    struct Main {
        #[diesel(sql_type = Text)]
        file: String,
    }
    let mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result::<Mode>(conn)
        .context("could not read SQLite's journal mode")?;
    let main = diesel::sql_query("SELECT file FROM pragma_database_list WHERE name = 'main'")
        .get_result::<Main>(conn)
        .context("could not read where SQLite keeps its files")?;
    if !mode.journal_mode.eq_ignore_ascii_case("wal") || main.file.is_empty() {
        return Ok(None);
    }
    conn.batch_execute("PRAGMA synchronous = NORMAL")
        .context("could not configure SQLite")?;
    Ok(Some(PathBuf::from(format!("{}-wal", main.file))))
}

/// How many transactions deep the connection is (0: none open).
fn depth(conn: &mut Connection) -> QueryResult<u32> {
    Ok(Manager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .map_or(0, |depth| depth.get()))
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
