//! Persistence: one schema, two backends.
//!
//! SQLite (bundled, WAL) is the embedded default; PostgreSQL is for production and for
//! several replicas sharing one database. The backend is chosen at run time from the URL
//! scheme. Queries are written once and expanded for each backend by [`with_connection!`],
//! so each is type-checked against both.
//!
//! All SQLite work goes through one connection, in turns (see [`sqlite`]): writes are
//! serialized inside the process, so "database is locked" never reaches a caller, the
//! busy timeout covers other processes (the CLI) touching the same file, and the turns
//! that arrive together share one commit.

mod access;
pub mod admin;
mod claims;
pub mod effects;
pub mod figures;
pub mod inbox;
pub mod inventory;
mod operators;
pub mod orders;
pub mod outcomes;
pub mod postgres;
mod prepared;
pub mod refunds;
pub mod replicas;
pub mod reservations;
mod sandbox;
pub mod schema;
pub mod sessions;
mod sqlite;
mod tally;
#[cfg(test)]
mod test_server;
pub mod types;

pub use sqlite::{Commit, Lane};
pub use tally::Tally;

use std::sync::Arc;

use anyhow::{Context, anyhow};
use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::metrics::{METRICS, seconds};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// How long a SQLite statement waits for another process's write lock.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Where the data lives, parsed from `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: a file, created if missing.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `postgres://…` and `postgresql://…`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, as in sqlite://fulfilld.db".into());
            }
            Ok(Self::Sqlite(path.to_owned()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_owned()))
        } else {
            Err("expected sqlite://PATH or postgres://USER@HOST/DATABASE".into())
        }
    }

    /// The backend's name, for logs (never the URL: it may hold a password).
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub enum Database {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(Arc<postgres::Postgres>),
}

/// Runs `$body` with `$conn` bound to a connection of whichever backend `$db` holds.
/// The body is compiled once per backend, so it must type-check against both. On SQLite
/// the caller waits until its group is durable, or only as far as the [`Commit`] given.
macro_rules! with_connection {
    ($db:expr, |$conn:ident| $body:expr) => {
        $crate::db::with_connection!($db, $crate::db::Lane::Background, |$conn| $body)
    };
    ($db:expr, $lane:expr, |$conn:ident| $body:expr) => {
        $crate::db::with_connection!($db, $lane, $crate::db::Commit::Durable, |$conn| $body)
    };
    ($db:expr, $lane:expr, $commit:expr, |$conn:ident| $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite(sqlite) => {
                let waiting = $crate::db::Timing::start();
                let mut turn = sqlite.turn($lane).await?;
                let _working = waiting.connected();
                let $conn = turn.connection();
                let result = $body;
                turn.ended($commit).await?;
                result
            }
            $crate::db::Database::Postgres(postgres) => {
                let waiting = $crate::db::Timing::start();
                let mut pooled = postgres.pooled().await?;
                let _working = waiting.connected();
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}
pub(crate) use with_connection;

/// Times one use of [`with_connection!`] for the metrics: the wait for a connection, then
/// (see [`Working`]) the work on it until it is durable or given up.
pub struct Timing(std::time::Instant);

impl Timing {
    pub fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// The connection is here: records the wait and times the work from now.
    pub fn connected(self) -> Working {
        METRICS.db_wait.observe(seconds(self.0.elapsed()));
        Working(std::time::Instant::now())
    }
}

/// Work on a connection, timed until it is dropped, whichever way the body ends.
pub struct Working(std::time::Instant);

impl Drop for Working {
    fn drop(&mut self) {
        METRICS.db_transaction.observe(seconds(self.0.elapsed()));
    }
}

impl Database {
    /// Applies pending migrations, then opens the handle the engine uses.
    pub async fn connect(url: &DatabaseUrl) -> anyhow::Result<Self> {
        migrate(url).await?;
        match url {
            DatabaseUrl::Sqlite(path) => {
                let opening = path.clone();
                let connection = tokio::task::spawn_blocking(move || open_sqlite(&opening))
                    .await
                    .context("SQLite start-up task failed")??;
                Ok(Self::Sqlite(sqlite::Sqlite::new(connection, path)?))
            }
            DatabaseUrl::Postgres(url) => {
                let database = Self::Postgres(Arc::new(postgres::Postgres::new(url)?));
                database.ping().await?;
                Ok(database)
            }
        }
    }

    /// Checks that the database answers a query.
    pub async fn ping(&self) -> anyhow::Result<()> {
        with_connection!(self, |conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .await
                .context("the database did not answer")?;
        });
        Ok(())
    }

    /// The backend's name, for logs and reports.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// The advisory lock replicas take turns under to migrate: "migr".
const MIGRATION_LOCK: i64 = 0x6d69_6772;
/// How long a process waits for another to finish migrating.
const MIGRATION_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// Takes the migration lock if no other session holds it.
fn try_lock(conn: &mut AsyncConnectionWrapper<AsyncPgConnection>) -> anyhow::Result<bool> {
    let row: Locked = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK),
        conn,
    )
    .context("could not take turns to migrate")?;
    Ok(row.locked)
}

/// Applies the embedded migrations of the URL's backend.
pub async fn migrate(url: &DatabaseUrl) -> anyhow::Result<()> {
    let url = url.clone();
    // Diesel's migration harness is synchronous; keep it off the async workers.
    tokio::task::spawn_blocking(move || match &url {
        DatabaseUrl::Sqlite(path) => {
            let mut conn = open_sqlite(path)?;
            run_migrations(&mut conn, SQLITE_MIGRATIONS)
        }
        DatabaseUrl::Postgres(url) => {
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(
                &postgres::with_keepalives(url),
            )
            .context("could not connect to PostgreSQL")?;
            // Replicas booting together: one migrates, the others wait here and then find
            // nothing left to do. The lock is the session's, so a replica that dies while
            // it migrates lets the next one go; one that never lets go stops the others
            // after MIGRATION_WAIT with an error that says so, not silently.
            let waited = std::time::Instant::now();
            while !try_lock(&mut conn)? {
                anyhow::ensure!(
                    waited.elapsed() < MIGRATION_WAIT,
                    "another process has been migrating the database for {} s; see \
                     pg_locks for the advisory lock {MIGRATION_LOCK}",
                    MIGRATION_WAIT.as_secs()
                );
                tracing::info!("waiting for another process to finish migrating the database");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            let migrated = run_migrations(&mut conn, POSTGRES_MIGRATIONS);
            let unlock = diesel::RunQueryDsl::execute(
                diesel::sql_query("SELECT pg_advisory_unlock($1)")
                    .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK),
                &mut conn,
            );
            if let Err(error) = unlock {
                // The connection closes next, and the lock with it.
                tracing::warn!(error = %error, "could not let go of the migration lock");
            }
            migrated
        }
    })
    .await
    .context("migration task failed")?
}

fn run_migrations<C>(conn: &mut C, migrations: EmbeddedMigrations) -> anyhow::Result<()>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    let applied = conn
        .run_pending_migrations(migrations)
        .map_err(|e| anyhow!("database migration failed: {e}"))?;
    for version in applied {
        tracing::info!(migration = %version, "applied migration");
    }
    Ok(())
}

pub(crate) fn open_sqlite(path: &str) -> anyhow::Result<SqliteConnection> {
    let mut conn = SqliteConnection::establish(path)
        .with_context(|| format!("could not open SQLite database {path}"))?;
    conn.batch_execute(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};"
    ))
    .context("could not configure SQLite")?;
    Ok(conn)
}

/// `duration` in milliseconds, the unit of every timestamp column; saturating.
pub fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch, the unit of every timestamp column.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
