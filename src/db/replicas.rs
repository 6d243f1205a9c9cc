//! The replicas sharing this database, and the commands sharing their Stripe budget: who
//! is alive, and who leads.

use std::time::Duration;

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::replicas;
use super::types::DbNow;
use super::{Database, with_connection};

#[derive(QueryableByName)]
struct Holder {
    #[diesel(sql_type = Nullable<Text>)]
    application_name: Option<String>,
}

/// A process heard from lately: a serving replica, or a command sharing the budget.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct Member {
    pub id: String,
    /// A serving replica; a command (`fulfilld reconcile`, …) does not serve.
    pub serves: bool,
}

impl Database {
    /// Records that `replica` (serving or not, as `serves` says) is alive now, and returns
    /// the members seen within `alive_for`, the longest-running first. On PostgreSQL this
    /// runs on the control connection: a pool busy with fulfilments cannot make a replica
    /// look gone.
    pub async fn heartbeat(
        &self,
        replica: &str,
        serves: bool,
        alive_for: Duration,
    ) -> anyhow::Result<Vec<Member>> {
        // One transaction: the beat and the count it reads go together.
        macro_rules! beat {
            ($conn:ident) => {{
                $conn
                    .transaction(async |$conn| {
                        diesel::insert_into(replicas::table)
                            .values((
                                replicas::id.eq(replica),
                                replicas::started_at.eq(DbNow::now()),
                                replicas::seen_at.eq(DbNow::now()),
                                replicas::serves.eq(serves),
                            ))
                            .on_conflict(replicas::id)
                            .do_update()
                            .set(replicas::seen_at.eq(DbNow::now()))
                            .execute($conn)
                            .await
                            .context("could not record this replica's heartbeat")?;
                        replicas::table
                            .filter(replicas::seen_at.ge(DbNow::before(alive_for)))
                            .order((replicas::started_at, replicas::id))
                            .select((replicas::id, replicas::serves))
                            .load::<Member>($conn)
                            .await
                            .context("could not list the replicas")
                    })
                    .await
            }};
        }
        match self {
            Database::Postgres(postgres) => postgres.on_control(async |conn| beat!(conn)).await,
            Database::Sqlite(_) => with_connection!(self, |conn| beat!(conn)),
        }
    }

    /// Forgets `replica` (it is stopping), and any replica not seen for `gone_for`.
    pub async fn leave(&self, replica: &str, gone_for: Duration) -> anyhow::Result<()> {
        with_connection!(self, |conn| {
            diesel::delete(
                replicas::table.filter(
                    replicas::id
                        .eq(replica)
                        .or(replicas::seen_at.lt(DbNow::before(gone_for))),
                ),
            )
            .execute(conn)
            .await
            .context("could not remove this replica")?;
        });
        Ok(())
    }

    /// PostgreSQL: the `application_name` of the session holding advisory lock `key` in
    /// this database, if any session holds it.
    pub async fn advisory_lock_holder(&self, key: i64) -> anyhow::Result<Option<String>> {
        let Database::Postgres(postgres) = self else {
            return Ok(None);
        };
        let mut conn = postgres.pooled().await?;
        // A bigint key is held as (classid, objid) = (high, low) halves, objsubid 1.
        let holders = diesel::sql_query(
            "SELECT a.application_name FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.classid::bigint = ($1 >> 32) AND l.objid::bigint = ($1 & 4294967295) \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind::<BigInt, _>(key)
        .load::<Holder>(&mut *conn)
        .await
        .context("could not read who holds the leader's lock")?;
        Ok(holders
            .into_iter()
            .find_map(|holder| holder.application_name))
    }
}
