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

    /// Whether a notice of session `session_id` enqueued before notice `id` is still to be
    /// delivered: notices of one session go in the order their changes were made.
    pub async fn earlier_notice_pending(&self, session_id: &str, id: i64) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            effects::table
                .filter(effects::session_id.eq(session_id))
                .filter(effects::kind.eq(EffectKind::AccessNotice))
                .filter(effects::id.lt(id))
                .filter(effects::status.eq(EffectStatus::Pending))
                .count()
                .get_result::<i64>(conn)
                .await
                .map(|earlier| earlier > 0)
                .context("could not look for earlier notices")
        })
    }
}
