//! PostgreSQL's connections: a pool for the engine's work, and connections of their own
//! for what must never queue behind it (the acknowledgements, the heartbeat, the lease
//! renewals).
//!
//! Every connection is opened with TCP keepalives and a user timeout, so a cut network
//! is noticed within seconds, and with server-side limits that fit its work:
//! `statement_timeout` bounds a statement, `lock_timeout` bounds a wait for a lock that
//! another session (a frozen replica) holds, and `idle_in_transaction_session_timeout`
//! makes the server end a session that stopped talking inside a transaction, so that what
//! it locked is released even if its process never runs again.

use std::time::Duration;

use anyhow::Context;
use diesel::{ConnectionError, ConnectionResult};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use futures_util::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::Mutex;

/// Connections per process in the engine's pool.
const POOL_SIZE: usize = 16;

/// What a connection is for, and so the limits it is opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Fulfilments, effects, the CLI: transactions of a few statements.
    Pool,
    /// The acknowledgement lane: one statement per batch of deliveries, answered within
    /// Stripe's wait.
    Inbox,
    /// Heartbeats and lease renewals: a statement or two, every second.
    Control,
    /// Renewals of effects' leases: one short statement each, which gives up on a row
    /// locked elsewhere at once and is tried again at the next renewal.
    Renewals,
    /// Effects marked done: the next receipt waits for it (the SMTP sync gap), so it
    /// never queues behind fulfilments for a pooled connection.
    Settlement,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Pool => "fulfilld",
            Self::Inbox => "fulfilld-inbox",
            Self::Control => "fulfilld-control",
            Self::Renewals => "fulfilld-renewals",
            Self::Settlement => "fulfilld-settlement",
        }
    }

    /// Whether the connection's statements are planned once, at their first run. PostgreSQL
    /// otherwise plans a prepared statement again at every run while the plan it would
    /// cache is costed above one made for the values, as it is for a statement over
    /// arrays: it costs the cached plan at ten rows an array. Each statement these
    /// connections run is tested with the plan made while the tables were empty (the
    /// event claims' renewal and the effects marked done in `db::claims::tests`), or reads
    /// the replicas' few rows. The others keep PostgreSQL's choice: the pool runs every
    /// other statement; the renewals of effects' leases, planned on an empty table, would
    /// walk the pending effects' partial index instead of the key; and the acknowledgement
    /// lane's batches, hundreds of deliveries in a sale, are best joined as PostgreSQL
    /// plans them for their size.
    fn plans_once(self) -> bool {
        matches!(self, Self::Control | Self::Settlement)
    }

    /// `(statement_timeout, lock_timeout, idle_in_transaction_session_timeout)`.
    fn limits(self) -> (Duration, Duration, Duration) {
        let s = Duration::from_secs;
        match self {
            Self::Pool | Self::Settlement => (s(30), s(5), s(5)),
            Self::Inbox => (s(5), s(1), s(5)),
            Self::Control => (s(2), s(1), s(5)),
            Self::Renewals => (s(2), Duration::from_millis(100), s(5)),
        }
    }
}

/// A PostgreSQL database: the pool, and the URL to open connections of their own.
pub struct Postgres {
    pub(super) pool: Pool<AsyncPgConnection>,
    url: String,
    /// The heartbeat's and the lease renewals' connection, opened when first needed and
    /// again after it fails.
    control: Mutex<Option<AsyncPgConnection>>,
    /// The effects' lease renewals' connection, likewise: apart from the control
    /// connection, so that a renewal waiting on a row its own attempt holds (a stock
    /// movement) never holds up a heartbeat.
    renewals: Mutex<Option<AsyncPgConnection>>,
    /// The connection that marks effects done, likewise.
    settlement: Mutex<Option<AsyncPgConnection>>,
    /// Where every connection is opened, so that its driver task lives on this runtime,
    /// which lasts as long as the process. Opened on an HTTP worker's runtime, a pooled
    /// connection died with that worker at shutdown, under whatever used it next.
    runtime: Handle,
}

impl Postgres {
    /// The pool and handle for `url`; no connection is opened yet.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let runtime = Handle::try_current().context("PostgreSQL needs a Tokio runtime")?;
        let mut config = ManagerConfig::default();
        // `is_broken` already drops a closed connection or one left in a transaction;
        // a `SELECT 1` on every checkout would cost a round trip per transaction.
        config.recycling_method = RecyclingMethod::Fast;
        let opening = runtime.clone();
        config.custom_setup =
            Box::new(move |url| open_on(opening.clone(), url.to_owned(), Role::Pool).boxed());
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .context("could not build the PostgreSQL pool")?;
        Ok(Self {
            pool,
            url: url.to_owned(),
            control: Mutex::new(None),
            renewals: Mutex::new(None),
            settlement: Mutex::new(None),
            runtime,
        })
    }

    /// A connection from the pool, for work written for PostgreSQL alone.
    pub async fn pooled(&self) -> anyhow::Result<Object<AsyncPgConnection>> {
        self.pool
            .get()
            .await
            .map_err(|e| anyhow::anyhow!("no PostgreSQL connection available: {e}"))
    }

    /// Opens a connection of its own for `role`, outside the pool.
    pub async fn connect(&self, role: Role) -> anyhow::Result<AsyncPgConnection> {
        open_on(self.runtime.clone(), self.url.clone(), role)
            .await
            .context("could not connect to PostgreSQL")
    }

    /// Runs `work` on the control connection, opening it first if need be; the
    /// connection is dropped when `work` is cancelled or fails other than by the
    /// server's refusal of a statement, and opened again next time.
    pub async fn on_control<T>(
        &self,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.on_own(&self.control, Role::Control, work).await
    }

    /// Runs `work` on the renewals' connection, as [`Postgres::on_control`] does.
    pub async fn on_renewals<T>(
        &self,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.on_own(&self.renewals, Role::Renewals, work).await
    }

    /// Runs `work` on the connection that marks effects done, as [`Postgres::on_control`]
    /// does.
    pub async fn on_settlement<T>(
        &self,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.on_own(&self.settlement, Role::Settlement, work).await
    }

    async fn on_own<T>(
        &self,
        own: &Mutex<Option<AsyncPgConnection>>,
        role: Role,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut own = own.lock().await;
        // Taken out while in use: if `work` is cancelled (a caller's timeout) the
        // connection goes with it, and a stuck one is never used again.
        // One the server closed while it sat idle (a restart, a terminated backend) is
        // not used: its statement would fail before it reached the server.
        let open = own
            .take()
            .and_then(|mut conn| (!PoolableConnection::is_broken(&mut conn)).then_some(conn));
        let mut conn = match open {
            Some(conn) => conn,
            None => self.connect(role).await?,
        };
        let result = work(&mut conn).await;
        // A connection the server ended (shut down, or timed out idle in a transaction)
        // is closed whatever the error said.
        let usable = !PoolableConnection::is_broken(&mut conn)
            && match &result {
                Ok(_) => true,
                // A statement the server refused (a lock or statement timeout) leaves the
                // connection as it was, unless a transaction is left open on it.
                Err(error) => {
                    refused_by_server(error)
                        && matches!(
                            AnsiTransactionManager::transaction_manager_status_mut(&mut conn)
                                .transaction_depth(),
                            Ok(None)
                        )
                }
            };
        if usable {
            *own = Some(conn);
        }
        result
    }
}

/// Whether `error` is the server refusing a statement, over a connection that works. A
/// connection that closed (the server stopped, the network cut it) is reported as a
/// database error too, as one that could not send: that one is not usable.
fn refused_by_server(error: &anyhow::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<Error>(),
            Some(Error::DatabaseError(kind, _)) if !matches!(
                kind,
                DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection
            )
        )
    })
}

/// Opens a connection for `role` on `runtime`, where its driver task then runs.
async fn open_on(runtime: Handle, url: String, role: Role) -> ConnectionResult<AsyncPgConnection> {
    runtime
        .spawn(open(url, role))
        .await
        .map_err(|error| ConnectionError::BadConnection(format!("opening failed: {error}")))?
}

/// Opens a connection for `role`: keepalives in its URL, its limits set once.
async fn open(url: String, role: Role) -> ConnectionResult<AsyncPgConnection> {
    let mut conn = AsyncPgConnection::establish(&with_keepalives(&url)).await?;
    let (statement, lock, idle) = role.limits();
    // Named after the role and the process, so an operator (or a test) can tell whose
    // session holds what in `pg_stat_activity`.
    conn.batch_execute(&format!(
        "SET application_name = '{}:{}'; SET statement_timeout = {}; SET lock_timeout = {}; \
         SET idle_in_transaction_session_timeout = {};{}",
        role.name(),
        std::process::id(),
        statement.as_millis(),
        lock.as_millis(),
        idle.as_millis(),
        if role.plans_once() {
            " SET plan_cache_mode = force_generic_plan;"
        } else {
            ""
        },
    ))
    .await
    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    Ok(conn)
}

/// `url` with TCP keepalives (probes after 5 s of silence, every second, three of them)
/// a 10 s TCP user timeout and a 5 s connect timeout, unless it sets them itself.
pub(super) fn with_keepalives(url: &str) -> String {
    let mut url = url.to_owned();
    for (key, value) in [
        ("keepalives", "1"),
        ("keepalives_idle", "5"),
        ("keepalives_interval", "1"),
        ("keepalives_retries", "3"),
        ("tcp_user_timeout", "10"),
        ("connect_timeout", "5"),
    ] {
        let query = url.split_once('?').map_or("", |(_, query)| query);
        if query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(key))
        {
            continue;
        }
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("{key}={value}"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::with_keepalives;

    #[test]
    fn keepalives_are_added_unless_the_url_sets_them() {
        assert_eq!(
            with_keepalives("postgres://u@h/db?keepalives_idle=30"),
            "postgres://u@h/db?keepalives_idle=30&keepalives=1&keepalives_interval=1\
             &keepalives_retries=3&tcp_user_timeout=10&connect_timeout=5"
        );
        assert!(
            with_keepalives("postgres://u@h/db").starts_with("postgres://u@h/db?keepalives=1&")
        );
    }
}
