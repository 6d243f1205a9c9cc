//! What the metrics read from the database when scraped: backlogs and what is dead.

use anyhow::Context;
use diesel::dsl::{count_star, min};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::effects::is_pending;
use super::schema::{effects, webhook_events};
use super::{Database, with_connection};

/// The state of the inbox and the outbox now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Events stored and neither carried out nor dead.
    pub inbox_backlog: i64,
    /// When the oldest of them arrived, in milliseconds since the epoch.
    pub oldest_waiting_at: Option<i64>,
    pub dead_events: i64,
    pub pending_effects: i64,
    pub dead_effects: i64,
}

impl Database {
    /// Counts what is waiting and what is dead, in one read.
    pub async fn figures(&self) -> anyhow::Result<Figures> {
        with_connection!(self, |conn| {
            let read = async {
                let (inbox_backlog, oldest_waiting_at) = webhook_events::table
                    .filter(webhook_events::processed_at.is_null())
                    .filter(webhook_events::dead_at.is_null())
                    .select((count_star(), min(webhook_events::received_at)))
                    .first::<(i64, Option<i64>)>(conn)
                    .await?;
                let dead_events = webhook_events::table
                    .filter(webhook_events::processed_at.is_null())
                    .filter(webhook_events::dead_at.is_not_null())
                    .count()
                    .get_result::<i64>(conn)
                    .await?;
                // Literal statuses, so each count is answered from its partial index
                // rather than a scan of every effect ever done.
                let pending_effects = effects::table
                    .filter(is_pending())
                    .count()
                    .get_result::<i64>(conn)
                    .await?;
                let dead_effects = effects::table
                    .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
                        "effects.status = 'dead'",
                    ))
                    .count()
                    .get_result::<i64>(conn)
                    .await?;
                Ok::<_, diesel::result::Error>(Figures {
                    inbox_backlog,
                    oldest_waiting_at,
                    dead_events,
                    pending_effects,
                    dead_effects,
                })
            };
            read.await.context("could not count the backlogs")
        })
    }
}
