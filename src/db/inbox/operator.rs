//! The inbox as an operator sees it: events listed, one read, a dead one revived.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::StoredEvent;
use crate::db::schema::{checkout_sessions, webhook_events};
use crate::db::{Database, with_connection};

/// An event as an operator sees it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_events)]
pub struct EventView {
    pub id: String,
    pub event_type: String,
    pub session_id: String,
    pub received_at: i64,
    pub processed_at: Option<i64>,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub dead_at: Option<i64>,
}

impl EventView {
    /// `processed`, `dead` or `waiting`.
    pub fn state(&self) -> &'static str {
        match (self.processed_at, self.dead_at) {
            (Some(_), _) => "processed",
            (None, Some(_)) => "dead",
            (None, None) => "waiting",
        }
    }
}

impl Database {
    /// Makes a dead event waiting again, due at once, with a fresh count of attempts.
    /// False when no dead event has this id.
    pub async fn revive_event(&self, event_id: &str) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            diesel::update(
                webhook_events::table
                    .find(event_id)
                    .filter(webhook_events::dead_at.is_not_null()),
            )
            .set((
                webhook_events::dead_at.eq(None::<i64>),
                webhook_events::attempts.eq(0),
                webhook_events::next_attempt_at.eq(0),
            ))
            .execute(conn)
            .await
            .map(|rows| rows == 1)
            .context("could not revive the event")
        })
    }

    /// One stored event.
    pub async fn event(&self, event_id: &str) -> anyhow::Result<Option<StoredEvent>> {
        with_connection!(self, |conn| {
            webhook_events::table
                .find(event_id)
                .select(StoredEvent::as_select())
                .first::<StoredEvent>(conn)
                .await
                .optional()
                .context("could not read the event")
        })
    }

    /// Events for an operator, newest first; only the dead ones when `dead`.
    pub async fn list_events(&self, dead: bool, limit: i64) -> anyhow::Result<Vec<EventView>> {
        with_connection!(self, |conn| {
            let mut query = webhook_events::table
                .select(EventView::as_select())
                .order((webhook_events::received_at.desc(), webhook_events::id))
                .limit(limit)
                .into_boxed();
            if dead {
                query = query.filter(webhook_events::dead_at.is_not_null());
            }
            query
                .load::<EventView>(conn)
                .await
                .context("could not list events")
        })
    }

    /// The events stored about a session, oldest first.
    pub async fn events_of(&self, session_id: &str) -> anyhow::Result<Vec<EventView>> {
        with_connection!(self, |conn| {
            // Refund news is stored under the payment intent it names.
            let payment_intent = checkout_sessions::table
                .find(session_id)
                .select(checkout_sessions::payment_intent)
                .first::<Option<String>>(conn)
                .await
                .optional()
                .context("could not read the session's payment intent")?
                .flatten();
            let subjects: Vec<&str> = std::iter::once(session_id)
                .chain(payment_intent.as_deref())
                .collect();
            webhook_events::table
                .filter(webhook_events::session_id.eq_any(subjects))
                .order((webhook_events::received_at, webhook_events::id))
                .select(EventView::as_select())
                .load::<EventView>(conn)
                .await
                .context("could not read the session's events")
        })
    }
}
