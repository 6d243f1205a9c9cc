//! For the tests of statements only PostgreSQL runs: a migrated database of their own on
//! the server `TEST_DATABASE_URL` names, and what a transaction read to answer them.

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{DatabaseUrl, migrate};

/// A database of one test's own, dropped by [`TestDatabase::remove`].
pub struct TestDatabase {
    admin: AsyncPgConnection,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A new migrated database, or `None` (and a line saying the test was skipped) when
    /// `TEST_DATABASE_URL` names no server.
    pub async fn create() -> Option<Self> {
        let Some(server) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
        else {
            eprintln!("skipped: it needs PostgreSQL (TEST_DATABASE_URL)");
            return None;
        };
        let name = format!("fulfilld_test_{:016x}", fastrand::u64(..));
        let mut admin = AsyncPgConnection::establish(&server)
            .await
            .expect("TEST_DATABASE_URL accepts connections");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("test database created");
        let (base, query) = server.split_once('?').unwrap_or((&server, ""));
        let (prefix, _) = base.rsplit_once('/').expect("URL has a path");
        let url = match query {
            "" => format!("{prefix}/{name}"),
            query => format!("{prefix}/{name}?{query}"),
        };
        migrate(&DatabaseUrl::Postgres(url.clone()))
            .await
            .expect("migrations apply");
        Some(Self { admin, name, url })
    }

    /// A connection whose prepared statements keep the plan made at their first run, as
    /// PostgreSQL's own choice does after five: run them on an empty table first, and a
    /// later test sees the plan a new deployment caches. Autovacuum is off for `tables`,
    /// so that no `ANALYZE` replaces that plan during the test.
    pub async fn connect_generic(&self, tables: &[&str]) -> AsyncPgConnection {
        let mut conn = AsyncPgConnection::establish(&self.url)
            .await
            .expect("test database accepts connections");
        run(&mut conn, "SET plan_cache_mode = force_generic_plan").await;
        for table in tables {
            run(
                &mut conn,
                &format!("ALTER TABLE {table} SET (autovacuum_enabled = off)"),
            )
            .await;
        }
        conn
    }

    /// Drops the database, and with it every connection still open to it.
    pub async fn remove(mut self) {
        diesel::sql_query(format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut self.admin)
            .await
            .expect("test database dropped");
    }
}

/// Runs `sql` on `conn`, panicking with it if it fails.
pub async fn run(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// Stores the sessions `cs_1` to `cs_{count}`, fulfilled.
pub async fn store_sessions(conn: &mut AsyncPgConnection, count: u32) {
    let sql = format!(
        "INSERT INTO checkout_sessions (id, status, livemode, created_at, updated_at) \
         SELECT 'cs_' || g, 'fulfilled', false, 0, 0 FROM generate_series(1, {count}) g"
    );
    run(conn, &sql).await;
}

/// Stores the events `evt_1` to `evt_{count}`, of the sessions `cs_1` to `cs_{count}`,
/// waiting and due.
pub async fn store_events(conn: &mut AsyncPgConnection, count: u32) {
    let sql = format!(
        "INSERT INTO webhook_events \
         (id, event_type, session_id, livemode, payload, received_at, next_attempt_at) \
         SELECT 'evt_' || g, 'checkout.session.completed', 'cs_' || g, false, '{{}}', 0, 0 \
         FROM generate_series(1, {count}) g"
    );
    run(conn, &sql).await;
}

/// What the transaction open on `conn` has read of `table` so far.
#[derive(Debug, diesel::QueryableByName)]
pub struct Reads {
    /// Rows read by scans of the whole table.
    #[diesel(sql_type = BigInt)]
    pub scanned: i64,
    /// Rows fetched through an index.
    #[diesel(sql_type = BigInt)]
    pub fetched: i64,
    /// Scans of an index: the control, which shows the counts are kept.
    #[diesel(sql_type = BigInt)]
    pub looked_up: i64,
}

pub async fn reads(conn: &mut AsyncPgConnection, table: &str) -> Reads {
    diesel::sql_query(
        "SELECT COALESCE(seq_tup_read, 0) AS scanned, COALESCE(idx_tup_fetch, 0) AS fetched, \
         COALESCE(idx_scan, 0) AS looked_up FROM pg_stat_xact_user_tables WHERE relname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .get_result::<Reads>(conn)
    .await
    .expect("statistics read")
}
