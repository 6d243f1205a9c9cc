//! The webhook-event inbox: every accepted event is stored before it is acknowledged.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::prepared::Prepared;
use super::schema::webhook_events;
use super::{Database, Lane, now_ms, with_connection};

mod operator;
pub use operator::EventView;
#[cfg(test)]
mod tests;

/// An event as it is stored, deduplicated by its id.
#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = webhook_events)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub session_id: String,
    pub livemode: bool,
    /// The event's raw JSON body, exactly as Stripe signed it.
    pub payload: String,
    pub received_at: i64,
    pub processed_at: Option<i64>,
    /// The connected account the event came from (Stripe Connect).
    pub account: Option<String>,
}

/// What became of an event after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFate {
    Retry {
        attempts: i32,
        delay: std::time::Duration,
    },
    Dead {
        attempts: i32,
    },
}

/// What storing one event found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    /// The event id was stored before; `processed` tells whether it was carried out.
    Duplicate {
        processed: bool,
    },
}

/// The acknowledgement lane's one statement on PostgreSQL: the batch is inserted from
/// arrays, in id order, leaving out the ids already stored (read from the statement's
/// snapshot, so that a row another session has locked, to mark it processed, say, is
/// never waited for); each id comes back with whether it was inserted and, if it was not,
/// whether it was processed. Run on its own, it is its own transaction: one commit.
///
/// The ids already stored are looked up one by one in the primary key (`LATERAL … LIMIT
/// 1`: a subquery with a limit is never merged into the outer query, so it stays a probe
/// of the key for each id). Written as a join, the plan PostgreSQL caches after a few runs
/// on a new, empty table hashed the batch against a scan of the whole table, and kept
/// doing so as the table grew: on a fresh database the cost of every acknowledgement grew
/// with the number of events stored, until the next `ANALYZE`.
const STORE_POSTGRES: &str = "\
    WITH incoming AS ( \
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], \
                             $6::bigint[], $7::text[]) \
            AS t(id, event_type, session_id, livemode, payload, received_at, account) \
    ), known AS ( \
        SELECT i.id, w.processed FROM incoming i, LATERAL ( \
            SELECT w.processed_at IS NOT NULL AS processed FROM webhook_events w \
            WHERE w.id = i.id LIMIT 1 \
        ) w \
    ), inserted AS ( \
        INSERT INTO webhook_events (id, event_type, session_id, livemode, payload, \
                                    received_at, account) \
        SELECT i.id, i.event_type, i.session_id, i.livemode, i.payload, i.received_at, \
               i.account \
        FROM incoming i WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.id = i.id) \
        ORDER BY i.id \
        ON CONFLICT DO NOTHING RETURNING id \
    ) \
    SELECT i.id, ins.id IS NOT NULL AS inserted, COALESCE(k.processed, false) AS processed \
    FROM incoming i LEFT JOIN inserted ins ON ins.id = i.id LEFT JOIN known k ON k.id = i.id";

#[derive(QueryableByName)]
struct StoredRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Bool)]
    inserted: bool,
    #[diesel(sql_type = Bool)]
    processed: bool,
}

/// Stores a batch of events with one statement on `conn`, a connection of the
/// acknowledgement lane's own. Ids repeated in the batch are stored once; the later
/// copies are duplicates.
pub async fn store_events_postgres(
    conn: &mut AsyncPgConnection,
    events: &[StoredEvent],
) -> anyhow::Result<Vec<Stored>> {
    let mut unique: Vec<&StoredEvent> = Vec::with_capacity(events.len());
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        if seen.insert(event.id.as_str()) {
            unique.push(event);
        }
    }
    let column =
        |field: fn(&StoredEvent) -> String| unique.iter().map(|e| field(e)).collect::<Vec<_>>();
    let rows = Prepared(
        diesel::sql_query(STORE_POSTGRES)
            .bind::<Array<Text>, _>(column(|e| e.id.clone()))
            .bind::<Array<Text>, _>(column(|e| e.event_type.clone()))
            .bind::<Array<Text>, _>(column(|e| e.session_id.clone()))
            .bind::<Array<Bool>, _>(unique.iter().map(|e| e.livemode).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(column(|e| e.payload.clone()))
            .bind::<Array<BigInt>, _>(unique.iter().map(|e| e.received_at).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(
                unique.iter().map(|e| e.account.clone()).collect::<Vec<_>>(),
            ),
    )
    .load::<StoredRow>(conn)
    .await
    .context("could not store webhook events")?;
    let mut found: HashMap<String, Stored> = rows
        .into_iter()
        .map(|row| {
            let stored = match row.inserted {
                true => Stored::New,
                false => Stored::Duplicate {
                    processed: row.processed,
                },
            };
            (row.id, stored)
        })
        .collect();
    events
        .iter()
        .map(|event| {
            // The first copy of an id takes its answer; any later one is a duplicate.
            match found.insert(event.id.clone(), Stored::Duplicate { processed: false }) {
                Some(stored) => Ok(stored),
                None => Err(anyhow::anyhow!(
                    "the database did not answer for event {}",
                    event.id
                )),
            }
        })
        .collect()
}

impl Database {
    /// Stores a batch of events in one transaction (one commit for the whole batch), in
    /// the acknowledgement lane: on SQLite, ahead of every background turn. Rows are
    /// written in id order, so that processes storing overlapping batches (Stripe
    /// retrying an event to another replica) take their locks in the same order and
    /// never deadlock. On PostgreSQL this runs on a pooled connection; the webhook's
    /// lane has connections of its own (see [`store_events_postgres`]).
    pub async fn store_events(&self, events: &[StoredEvent]) -> anyhow::Result<Vec<Stored>> {
        if let Self::Postgres(postgres) = self {
            let mut conn = postgres.pooled().await?;
            return store_events_postgres(&mut conn, events).await;
        }
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by(|a, b| events[*a].id.cmp(&events[*b].id));
        with_connection!(self, Lane::Acknowledgement, |conn| {
            conn.transaction(async |conn| {
                let mut stored = vec![Stored::New; events.len()];
                for &index in &order {
                    let event = &events[index];
                    let inserted = diesel::insert_into(webhook_events::table)
                        .values(event)
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if inserted == 0 {
                        let processed_at = webhook_events::table
                            .find(&event.id)
                            .select(webhook_events::processed_at)
                            .first::<Option<i64>>(conn)
                            .await?;
                        stored[index] = Stored::Duplicate {
                            processed: processed_at.is_some(),
                        };
                    }
                }
                Ok::<_, diesel::result::Error>(stored)
            })
            .await
            .context("could not store webhook events")
        })
    }

    /// Marks an event as carried out, so it is not replayed.
    pub async fn mark_processed(&self, event_id: &str) -> anyhow::Result<()> {
        with_connection!(self, |conn| {
            Prepared(
                diesel::update(
                    webhook_events::table
                        .find(event_id)
                        .filter(webhook_events::processed_at.is_null()),
                )
                .set((
                    webhook_events::processed_at.eq(now_ms()),
                    webhook_events::lease_until.eq(None::<i64>),
                )),
            )
            .execute(conn)
            .await
            .context("could not mark the event processed")?;
        });
        Ok(())
    }

    /// Up to `limit` stored events waiting to be carried out (neither processed nor dead)
    /// that arrived before `received_before`, in id order after `after`: paged by key, so
    /// events that keep failing never hold up the rest. `due_only` leaves out those whose
    /// next attempt is later.
    pub async fn waiting_events(
        &self,
        received_before: i64,
        after: &str,
        due_only: bool,
        limit: i64,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let due_by = if due_only { now_ms() } else { i64::MAX };
        with_connection!(self, |conn| {
            webhook_events::table
                .filter(webhook_events::processed_at.is_null())
                .filter(webhook_events::dead_at.is_null())
                .filter(webhook_events::received_at.lt(received_before))
                .filter(webhook_events::next_attempt_at.le(due_by))
                .filter(webhook_events::id.gt(after))
                .order(webhook_events::id)
                .limit(limit)
                .select(StoredEvent::as_select())
                .load::<StoredEvent>(conn)
                .await
                .context("could not list waiting events")
        })
    }

    /// Records a failed attempt at an event. `retry_after` says, from the attempts made so
    /// far (this one included), how long to wait before the next; `None` makes the event
    /// dead. Returns the event's fate, or `None` when it was processed meanwhile.
    pub async fn fail_event(
        &self,
        event_id: &str,
        error: &str,
        retry_after: impl Fn(i32) -> Option<std::time::Duration> + Send + Sync,
    ) -> anyhow::Result<Option<EventFate>> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let waiting = webhook_events::table
                    .find(event_id)
                    .filter(webhook_events::processed_at.is_null())
                    .select(webhook_events::attempts)
                    .first::<i32>(conn)
                    .await
                    .optional()?;
                let Some(attempts) = waiting.map(|made| made.saturating_add(1)) else {
                    return Ok::<_, anyhow::Error>(None);
                };
                let retry = retry_after(attempts);
                let next = retry.map_or(now, |delay| now.saturating_add(super::millis(delay)));
                diesel::update(webhook_events::table.find(event_id))
                    .set((
                        webhook_events::attempts.eq(attempts),
                        webhook_events::last_error.eq(error),
                        webhook_events::next_attempt_at.eq(next),
                        // The claim is left as it is: it may be another replica's by now.
                        webhook_events::dead_at.eq(retry.is_none().then_some(now)),
                    ))
                    .execute(conn)
                    .await?;
                Ok(Some(match retry {
                    Some(delay) => EventFate::Retry { attempts, delay },
                    None => EventFate::Dead { attempts },
                }))
            })
            .await
            .context("could not record the event's failure")
        })
    }

    /// Puts a waiting event off for `delay`, its attempts uncounted: it met another
    /// session's lock, which says nothing about whether it can be carried out, so a
    /// long contention never makes it dead.
    pub async fn put_off_event(
        &self,
        event_id: &str,
        reason: &str,
        delay: std::time::Duration,
    ) -> anyhow::Result<()> {
        let next = now_ms().saturating_add(super::millis(delay));
        with_connection!(self, |conn| {
            diesel::update(
                webhook_events::table
                    .find(event_id)
                    .filter(webhook_events::processed_at.is_null())
                    .filter(webhook_events::dead_at.is_null()),
            )
            .set((
                webhook_events::last_error.eq(reason),
                webhook_events::next_attempt_at.eq(next),
            ))
            .execute(conn)
            .await
            .map(drop)
            .context("could not put the event off")
        })
    }
}
