//! The bench's PostgreSQL databases: one made per scenario and dropped after it, and the
//! server's count of WAL syncs.

use anyhow::Context;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// Creates a database named after the scenario and the run on `server`; returns its URL.
pub async fn fresh_postgres(server: &str, name: &str) -> anyhow::Result<String> {
    let database = format!("fulfilld_bench_{name}_{:08x}", fastrand::u32(..));
    let mut admin = AsyncPgConnection::establish(server)
        .await
        .context("cannot connect to PostgreSQL")?;
    diesel::sql_query(format!("CREATE DATABASE {database}"))
        .execute(&mut admin)
        .await
        .context("cannot create the bench database")?;
    let mut url = url::Url::parse(server).context("the PostgreSQL URL")?;
    url.set_path(&database);
    Ok(url.to_string())
}

/// Drops a database `fresh_postgres` made, whoever is still connected to it.
pub async fn drop_postgres(server: &str, database_url: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(database_url).context("the bench database's URL")?;
    let name = url.path().trim_start_matches('/');
    let mut admin = AsyncPgConnection::establish(server)
        .await
        .context("cannot connect to PostgreSQL")?;
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .context("cannot drop the bench database")?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct WalSyncs {
    #[diesel(sql_type = BigInt)]
    wal_sync: i64,
}

/// The server's WAL syncs so far (PostgreSQL 14 and later).
pub async fn wal_syncs(server: &str) -> anyhow::Result<i64> {
    let mut conn = AsyncPgConnection::establish(server)
        .await
        .context("cannot connect to PostgreSQL")?;
    let row: WalSyncs = diesel::sql_query("SELECT wal_sync FROM pg_stat_wal")
        .get_result(&mut conn)
        .await
        .context("cannot read pg_stat_wal")?;
    Ok(row.wal_sync)
}
