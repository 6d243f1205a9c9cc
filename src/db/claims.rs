//! Claims on stored events: one replica at a time carries an event out.
//!
//! A claim names the replica and holds until `lease_until`, by the database's clock; the
//! replica renews its claims while it works them, on a connection of its own. Another
//! replica may take an event whose claim ran out (its claimant was killed, frozen or cut
//! off), and looks for such events as often as a lease lasts: an event is never stuck
//! behind a replica that will not come back. On PostgreSQL a claim
//! skips the rows another session has locked at that moment (`FOR UPDATE SKIP LOCKED`),
//! so it never waits behind a frozen replica's open transaction either.

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::inbox::StoredEvent;
use super::prepared::Prepared;
use super::types::{DbNow, now_ms_sql};
use super::{Database, millis, with_connection};

/// Whether a stored event may be claimed by `$3`, due by `$4` (ms): waiting (neither
/// processed nor dead), due, and not claimed by another replica whose lease holds.
macro_rules! claimable_sql {
    ($backend:ident) => {
        concat!(
            "processed_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $4 AND (",
            "lease_until IS NULL OR claimed_by IS NULL OR claimed_by = $3 OR lease_until <= ",
            now_ms_sql!($backend),
            ")"
        )
    };
}

/// The claim: `$1` the ids (a JSON array), `$2` the lease in ms, `$3` the replica, `$4`
/// due by (ms). SQLite numbers `$N` parameters in the order they first appear; `?N` is
/// the N-th bind.
static CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| {
    concat!(
        "UPDATE webhook_events SET lease_until = ",
        now_ms_sql!(sqlite),
        " + $2, claimed_by = $3 WHERE id IN (SELECT value FROM json_each($1)) AND ",
        claimable_sql!(sqlite),
        " RETURNING id"
    )
    .replace('$', "?")
});

/// The claim on PostgreSQL, `$1` an array. Each id is looked up in the key on its own
/// (a subquery with a limit is never merged into the query around it), and the rows
/// claimed are updated through the key. So a claim reads its own events, whichever plan
/// PostgreSQL cached: a plan made while the table was empty otherwise walks every
/// waiting event for the few it was asked for.
const CLAIM_POSTGRES: &str = concat!(
    "UPDATE webhook_events SET lease_until = ",
    now_ms_sql!(postgres),
    " + $2, claimed_by = $3 FROM unnest($1::text[]) AS asked(id), ",
    "LATERAL (SELECT id FROM webhook_events e WHERE e.id = asked.id AND ",
    claimable_sql!(postgres),
    " LIMIT 1 FOR UPDATE SKIP LOCKED) AS claimable ",
    "WHERE webhook_events.id = claimable.id RETURNING webhook_events.id"
);

/// Renews `$3`'s claims on the ids `$1` for `$2` ms.
static RENEW_SQLITE: LazyLock<String> = LazyLock::new(|| {
    concat!(
        "UPDATE webhook_events SET lease_until = ",
        now_ms_sql!(sqlite),
        " + $2 WHERE id IN (SELECT value FROM json_each($1)) ",
        "AND claimed_by = $3 AND processed_at IS NULL AND dead_at IS NULL"
    )
    .replace('$', "?")
});

/// The renewal on PostgreSQL, in the claim's shape for the claim's reason. It skips a
/// row another session holds, which is being marked processed or taken over (it is then
/// not this replica's to renew), so that it never waits on the control connection.
const RENEW_POSTGRES: &str = concat!(
    "UPDATE webhook_events SET lease_until = ",
    now_ms_sql!(postgres),
    " + $2 FROM unnest($1::text[]) AS asked(id), ",
    "LATERAL (SELECT id FROM webhook_events e WHERE e.id = asked.id AND claimed_by = $3 ",
    "AND processed_at IS NULL AND dead_at IS NULL LIMIT 1 FOR UPDATE SKIP LOCKED) AS renewable ",
    "WHERE webhook_events.id = renewable.id"
);

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = Text)]
    id: String,
}

impl Database {
    /// Claims for `replica`, leased for `lease`, those of the events `ids` that are
    /// waiting (neither processed nor dead), due by `due_by`, and not claimed by another
    /// replica whose lease holds. Returns the ids claimed.
    pub async fn claim_events(
        &self,
        ids: &[String],
        replica: &str,
        due_by: i64,
        lease: Duration,
    ) -> anyhow::Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Postgres(postgres) => {
                let mut conn = postgres.pooled().await?;
                claim_events_postgres(&mut conn, ids, replica, due_by, lease).await
            }
            Self::Sqlite(_) => {
                let ids = serde_json::to_string(ids)?;
                let claimed = with_connection!(self, |conn| {
                    Prepared(
                        diesel::sql_query(CLAIM_SQLITE.as_str())
                            .bind::<Text, _>(&ids)
                            .bind::<BigInt, _>(millis(lease))
                            .bind::<Text, _>(replica)
                            .bind::<BigInt, _>(due_by),
                    )
                    .load::<Claimed>(conn)
                    .await
                });
                let claimed = claimed.context("could not claim events")?;
                Ok(claimed.into_iter().map(|claimed| claimed.id).collect())
            }
        }
    }

    /// Extends `replica`'s claims on the events `ids` still waiting to `lease` from now.
    /// On PostgreSQL this runs on the control connection, so a busy pool cannot let a
    /// claim lapse.
    pub async fn renew_event_claims(
        &self,
        ids: &[String],
        replica: &str,
        lease: Duration,
    ) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        match self {
            Self::Postgres(postgres) => {
                postgres
                    .on_control(async |conn| {
                        renew_event_claims_postgres(conn, ids, replica, lease).await
                    })
                    .await?;
            }
            Self::Sqlite(_) => {
                let ids = serde_json::to_string(ids)?;
                with_connection!(self, |conn| {
                    Prepared(
                        diesel::sql_query(RENEW_SQLITE.as_str())
                            .bind::<Text, _>(&ids)
                            .bind::<BigInt, _>(millis(lease))
                            .bind::<Text, _>(replica),
                    )
                    .execute(conn)
                    .await
                    .context("could not renew the claims on events")?;
                });
            }
        }
        Ok(())
    }

    /// Up to `limit` waiting events that nobody is carrying out: their claim has run out
    /// (the claimant was killed, frozen or cut off), or they were received before
    /// `unclaimed_before` and never claimed (a claim skipped them while another session
    /// had them locked).
    pub async fn abandoned_events(
        &self,
        unclaimed_before: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        use super::schema::webhook_events;
        use diesel::{
            BoolExpressionMethods, ExpressionMethods, NullableExpressionMethods, QueryDsl,
            SelectableHelper,
        };
        with_connection!(self, |conn| {
            webhook_events::table
                .filter(webhook_events::processed_at.is_null())
                .filter(webhook_events::dead_at.is_null())
                .filter(
                    webhook_events::lease_until.le(DbNow::now().nullable()).or(
                        webhook_events::lease_until
                            .is_null()
                            .and(webhook_events::received_at.lt(unclaimed_before)),
                    ),
                )
                .filter(webhook_events::next_attempt_at.le(super::now_ms()))
                .order(webhook_events::id)
                .limit(limit)
                .select(StoredEvent::as_select())
                .load::<StoredEvent>(conn)
                .await
                .context("could not list abandoned events")
        })
    }

    /// Deletes up to `limit` events processed before `before` (ms since the epoch), with
    /// nothing else of theirs: the sessions they recorded stay. Returns how many.
    pub async fn prune_events(&self, before: i64, limit: i64) -> anyhow::Result<usize> {
        with_connection!(self, |conn| {
            diesel::sql_query(
                "DELETE FROM webhook_events WHERE id IN (SELECT id FROM webhook_events \
                 WHERE processed_at < $1 ORDER BY processed_at LIMIT $2)",
            )
            .bind::<BigInt, _>(before)
            .bind::<BigInt, _>(limit)
            .execute(conn)
            .await
            .context("could not prune processed events")
        })
    }
}

/// [`Database::claim_events`] on `conn`.
pub(super) async fn claim_events_postgres(
    conn: &mut AsyncPgConnection,
    ids: &[String],
    replica: &str,
    due_by: i64,
    lease: Duration,
) -> anyhow::Result<Vec<String>> {
    let claimed = Prepared(
        diesel::sql_query(CLAIM_POSTGRES)
            .bind::<Array<Text>, _>(ids)
            .bind::<BigInt, _>(millis(lease))
            .bind::<Text, _>(replica)
            .bind::<BigInt, _>(due_by),
    )
    .load::<Claimed>(conn)
    .await
    .context("could not claim events")?;
    Ok(claimed.into_iter().map(|claimed| claimed.id).collect())
}

/// [`Database::renew_event_claims`] on `conn`; returns how many claims it renewed.
pub(super) async fn renew_event_claims_postgres(
    conn: &mut AsyncPgConnection,
    ids: &[String],
    replica: &str,
    lease: Duration,
) -> anyhow::Result<usize> {
    Prepared(
        diesel::sql_query(RENEW_POSTGRES)
            .bind::<Array<Text>, _>(ids)
            .bind::<BigInt, _>(millis(lease))
            .bind::<Text, _>(replica),
    )
    .execute(conn)
    .await
    .context("could not renew the claims on events")
}

#[cfg(test)]
mod tests;
