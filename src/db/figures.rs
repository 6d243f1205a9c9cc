//! What the metrics read from the database when scraped: backlogs and what is dead.

use anyhow::Context;
use diesel::dsl::{count_star, min};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{effects, webhook_events};
use super::{Database, with_connection};
use crate::domain::EffectStatus;

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
                let by_status = effects::table
                    .filter(effects::status.ne(EffectStatus::Done))
                    .group_by(effects::status)
                    .select((effects::status, count_star()))
                    .load::<(EffectStatus, i64)>(conn)
                    .await?;
                let count_of = |wanted: EffectStatus| {
                    by_status
                        .iter()
                        .find(|(status, _)| *status == wanted)
                        .map_or(0, |(_, count)| *count)
                };
                Ok::<_, diesel::result::Error>(Figures {
                    inbox_backlog,
                    oldest_waiting_at,
                    dead_events,
                    pending_effects: count_of(EffectStatus::Pending),
                    dead_effects: count_of(EffectStatus::Dead),
                })
            };
            read.await.context("could not count the backlogs")
        })
    }
}
