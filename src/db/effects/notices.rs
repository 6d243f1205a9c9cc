//! Access notices: what each one says, and the order they go in.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::effects;
use crate::db::{Database, with_connection};
use crate::domain::{EffectKind, EffectStatus};

impl Database {
    /// The JSON body stored with a notice effect.
    pub async fn effect_body(&self, id: i64) -> anyhow::Result<Option<String>> {
        with_connection!(self, |conn| {
            effects::table
                .find(id)
                .select(effects::body)
                .first::<Option<String>>(conn)
                .await
                .optional()
                .map(Option::flatten)
                .context("could not read the notice")
        })
    }

    /// When the first notice of session `session_id` enqueued before notice `id` that is
    /// still to be delivered is next due (milliseconds since the epoch), if there is one:
    /// notices of one session go in the order their changes were made.
    pub async fn earlier_notice_due(
        &self,
        session_id: &str,
        id: i64,
    ) -> anyhow::Result<Option<i64>> {
        with_connection!(self, |conn| {
            effects::table
                .filter(effects::session_id.eq(session_id))
                .filter(effects::kind.eq(EffectKind::AccessNotice))
                .filter(effects::id.lt(id))
                .filter(effects::status.eq(EffectStatus::Pending))
                .select(diesel::dsl::min(effects::next_attempt_at))
                .first::<Option<i64>>(conn)
                .await
                .context("could not look for earlier notices")
        })
    }
}
