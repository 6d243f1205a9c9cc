//! The webhook-event inbox: every accepted event is stored before it is acknowledged.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::webhook_events;
use super::{Database, now_ms, with_connection};

/// An event as it is stored, deduplicated by its id.
#[derive(Debug, Clone, Insertable, Queryable)]
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

impl Database {
    /// Stores a batch of events in one transaction (one commit for the whole batch).
    /// Rows are written in id order, so that replicas storing overlapping batches (Stripe
    /// retrying an event to another replica) take their locks in the same order and never
    /// deadlock.
    pub async fn store_events(&self, events: &[StoredEvent]) -> anyhow::Result<Vec<Stored>> {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by(|a, b| events[*a].id.cmp(&events[*b].id));
        with_connection!(self, |conn| {
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
            diesel::update(
                webhook_events::table
                    .find(event_id)
                    .filter(webhook_events::processed_at.is_null()),
            )
            .set(webhook_events::processed_at.eq(now_ms()))
            .execute(conn)
            .await
            .context("could not mark the event processed")?;
        });
        Ok(())
    }

    /// Stored events not yet carried out that arrived before `received_before`, oldest
    /// first.
    pub async fn unprocessed_events(
        &self,
        received_before: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        with_connection!(self, |conn| {
            webhook_events::table
                .filter(webhook_events::processed_at.is_null())
                .filter(webhook_events::received_at.lt(received_before))
                .order((webhook_events::received_at, webhook_events::id))
                .limit(limit)
                .load::<StoredEvent>(conn)
                .await
                .context("could not list unprocessed events")
        })
    }

    /// One stored event.
    pub async fn event(&self, event_id: &str) -> anyhow::Result<Option<StoredEvent>> {
        with_connection!(self, |conn| {
            webhook_events::table
                .find(event_id)
                .first::<StoredEvent>(conn)
                .await
                .optional()
                .context("could not read the event")
        })
    }
}
