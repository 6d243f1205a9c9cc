//! The bench's PostgreSQL databases: one made per scenario and dropped after it, the
//! server's count of WAL syncs, and the CPU time of the backends serving a database.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::{Array, BigInt, Integer, Text};
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

#[derive(diesel::QueryableByName)]
struct Backend {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// The CPU time so far of each backend that the fulfilld processes `servers` hold on
/// `database_url` (each names its connections `role:PID`), by process id; the bench's
/// own connections are left out. `None` when the server runs elsewhere (in a container,
/// say), where its process ids are not this machine's. A backend that exits meanwhile is
/// left out, and one that was never seen connected is not counted at all.
pub async fn backend_cpu(
    database_url: &str,
    servers: &[u32],
) -> anyhow::Result<Option<HashMap<i32, Duration>>> {
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .context("cannot connect to the bench database")?;
    let servers: Vec<String> = servers.iter().map(u32::to_string).collect();
    let backends: Vec<Backend> = diesel::sql_query(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND split_part(application_name, ':', 2) = ANY($1)",
    )
    .bind::<Array<Text>, _>(&servers)
    .load(&mut conn)
    .await
    .context("cannot read pg_stat_activity")?;
    let mut cpu = HashMap::new();
    for Backend { pid } in backends {
        let Ok(process) = u32::try_from(pid) else {
            return Ok(None);
        };
        match std::fs::read_to_string(format!("/proc/{process}/comm")) {
            Ok(name) if name.trim_end() == "postgres" => {}
            Ok(_) => return Ok(None),
            Err(_) => continue,
        }
        if let Ok(spent) = super::server::process_cpu(process) {
            cpu.insert(pid, spent);
        }
    }
    Ok(Some(cpu))
}

/// The CPU the backends spent between two readings of [`backend_cpu`]: all of it for a
/// backend that connected in between.
pub fn backend_cpu_spent(
    before: &HashMap<i32, Duration>,
    after: &HashMap<i32, Duration>,
) -> Duration {
    after
        .iter()
        .map(|(pid, spent)| spent.saturating_sub(before.get(pid).copied().unwrap_or_default()))
        .sum()
}
