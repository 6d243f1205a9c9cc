//! Counts over the whole database, for `fulfilld bench`'s exactly-once checks.

use anyhow::Context;
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{access_grants, checkout_sessions, effects, webhook_events};
use super::{Database, with_connection};
use crate::domain::{EffectStatus, Status};

/// What the database holds, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub sessions: i64,
    pub fulfilled: i64,
    pub access_grants: i64,
    pub effects: i64,
    pub effects_done: i64,
    pub events: i64,
    pub events_processed: i64,
}

impl Database {
    /// Counts sessions, grants, effects and events.
    pub async fn tally(&self) -> anyhow::Result<Tally> {
        with_connection!(self, |conn| {
            let count = "could not count the database's rows";
            Ok(Tally {
                sessions: checkout_sessions::table
                    .select(count_star())
                    .get_result(conn)
                    .await
                    .context(count)?,
                fulfilled: checkout_sessions::table
                    .filter(checkout_sessions::status.eq(Status::Fulfilled))
                    .select(count_star())
                    .get_result(conn)
                    .await
                    .context(count)?,
                access_grants: access_grants::table
                    .select(count_star())
                    .get_result(conn)
                    .await
                    .context(count)?,
                effects: effects::table
                    .select(count_star())
                    .get_result(conn)
                    .await
                    .context(count)?,
                effects_done: effects::table
                    .filter(effects::status.eq(EffectStatus::Done))
                    .select(count_star())
                    .get_result(conn)
                    .await
                    .context(count)?,
                events: webhook_events::table
                    .select(count_star())
                    .get_result(conn)
                    .await
                    .context(count)?,
                events_processed: webhook_events::table
                    .filter(webhook_events::processed_at.is_not_null())
                    .select(count_star())
                    .get_result(conn)
                    .await
                    .context(count)?,
            })
        })
    }
}
