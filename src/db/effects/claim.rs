//! The claim: due effects, each leased for one attempt.

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::ClaimedEffect;
use crate::db::prepared::Prepared;
use crate::db::types::now_ms_sql;
use crate::db::{Database, millis, with_connection};

/// The claim, with the database's clock and the row-locking clause only PostgreSQL has.
/// `$1` is the lease in milliseconds, `$2` how many to claim, `$3` the ids to leave out.
/// The status is written out, as in [`is_pending`](super::is_pending). A constant, so it
/// is prepared once; `LIMIT +$2`, because SQLite plans by a bound `LIMIT` and would
/// prepare it at each run.
///
/// `$due_by` is the bound on `next_attempt_at`. The index `effects_due` can stop at it
/// only if it is fixed for the whole scan: on PostgreSQL the clock read in a subquery,
/// once (the clock by itself is read again for every row, so it can only filter them).
/// Otherwise a claim that finds fewer due effects than it asked for reads on through every
/// effect waiting to be retried later: after a mail outage, thousands for each claim.
macro_rules! claim_sql {
    ($backend:ident, $due_by:expr, $left_out:literal, $lock:literal) => {
        concat!(
            "UPDATE effects SET lease_until = ",
            now_ms_sql!($backend),
            " + $1, lease = lease + 1, attempts = attempts + 1 ",
            "WHERE id IN (SELECT id FROM effects WHERE status = 'pending' AND next_attempt_at <= ",
            $due_by,
            " AND (lease_until IS NULL OR lease_until <= ",
            now_ms_sql!($backend),
            ") AND ",
            $left_out,
            " ORDER BY next_attempt_at LIMIT +$2",
            $lock,
            ") RETURNING id, session_id, kind, attempts, lease, traceparent, subject, ",
            "(SELECT status FROM checkout_sessions s WHERE s.id = effects.session_id) ",
            "AS session_status"
        )
    };
}

/// `?N`, which SQLite numbers by N (it numbers `$N` in the order they first appear).
/// SQLite reads the clock once for each statement, and its index stops at that bound.
static CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| {
    claim_sql!(
        sqlite,
        now_ms_sql!(sqlite),
        "id NOT IN (SELECT value FROM json_each($3))",
        ""
    )
    .replace('$', "?")
});
const CLAIM_POSTGRES: &str = claim_sql!(
    postgres,
    concat!("(SELECT ", now_ms_sql!(postgres), ")"),
    "id <> ALL($3)",
    " FOR UPDATE SKIP LOCKED"
);

impl Database {
    /// Claims up to `limit` due effects for one attempt each, leased for `lease` from the
    /// moment the database runs the claim; never one of `running`, which this process is
    /// still attempting.
    pub async fn claim_effects(
        &self,
        limit: usize,
        lease: Duration,
        running: &[i64],
    ) -> anyhow::Result<Vec<ClaimedEffect>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Self::Postgres(postgres) => {
                let mut conn = postgres.pooled().await?;
                claim_effects_postgres(&mut conn, limit, lease, running).await
            }
            Self::Sqlite(_) => {
                let running = serde_json::to_string(running)?;
                let claimed = with_connection!(self, |conn| {
                    Prepared(
                        diesel::sql_query(CLAIM_SQLITE.as_str())
                            .bind::<BigInt, _>(millis(lease))
                            .bind::<BigInt, _>(limit)
                            .bind::<Text, _>(&running),
                    )
                    .load::<ClaimedEffect>(conn)
                    .await
                });
                claimed.context("could not claim due effects")
            }
        }
    }
}

/// [`Database::claim_effects`] on `conn`.
pub(crate) async fn claim_effects_postgres(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease: Duration,
    running: &[i64],
) -> anyhow::Result<Vec<ClaimedEffect>> {
    Prepared(
        diesel::sql_query(CLAIM_POSTGRES)
            .bind::<BigInt, _>(millis(lease))
            .bind::<BigInt, _>(limit)
            .bind::<Array<BigInt>, _>(running),
    )
    .load::<ClaimedEffect>(conn)
    .await
    .context("could not claim due effects")
}
