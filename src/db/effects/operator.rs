//! The outbox as an operator sees it: effects listed, and a dead one made pending again.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::db::schema::{effects, shipments};
use crate::db::types::DbNow;
use crate::db::{Database, now_ms, with_connection};
use crate::domain::{EffectKind, EffectStatus, SessionId, ShipmentStatus};

/// An effect as an operator sees it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = effects)]
pub struct EffectView {
    pub id: i64,
    pub session_id: String,
    pub kind: EffectKind,
    pub status: EffectStatus,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    /// While an attempt runs: until when it holds the effect (ms since the epoch).
    pub lease_until: Option<i64>,
}

impl Database {
    /// Makes a dead effect pending again, with a fresh count of attempts. False when no
    /// dead effect has this id.
    pub async fn revive_effect(&self, id: i64) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let revived = diesel::update(
                    effects::table
                        .find(id)
                        .filter(effects::status.eq(EffectStatus::Dead)),
                )
                .set((
                    effects::status.eq(EffectStatus::Pending),
                    effects::attempts.eq(0),
                    effects::next_attempt_at.eq(DbNow::now()),
                    effects::lease_until.eq(None::<i64>),
                    effects::updated_at.eq(now_ms()),
                ))
                .returning((effects::session_id, effects::kind))
                .get_result::<(String, EffectKind)>(conn)
                .await
                .optional()?;
                let Some((session_id, kind)) = revived else {
                    return Ok::<_, anyhow::Error>(false);
                };
                if kind == EffectKind::Shipment {
                    set_shipment_status!(conn, &session_id, ShipmentStatus::Pending);
                }
                Ok(true)
            })
            .await
            .context("could not retry the effect")
        })
    }

    /// Effects for an operator, newest first; only those with `status` when given.
    pub async fn list_effects(
        &self,
        status: Option<EffectStatus>,
        limit: i64,
    ) -> anyhow::Result<Vec<EffectView>> {
        with_connection!(self, |conn| {
            let mut query = effects::table
                .select(EffectView::as_select())
                .order(effects::id.desc())
                .limit(limit)
                .into_boxed();
            if let Some(status) = status {
                query = query.filter(effects::status.eq(status));
            }
            query
                .load::<EffectView>(conn)
                .await
                .context("could not list effects")
        })
    }

    /// The effects enqueued for a session, oldest first.
    pub async fn list_effects_of(&self, id: &SessionId) -> anyhow::Result<Vec<EffectView>> {
        with_connection!(self, |conn| {
            effects::table
                .filter(effects::session_id.eq(id.as_str()))
                .order(effects::id)
                .select(EffectView::as_select())
                .load::<EffectView>(conn)
                .await
                .context("could not read the session's effects")
        })
    }

    /// The effects enqueued for a session, as (kind, status), oldest first.
    pub async fn effects_of(
        &self,
        id: &SessionId,
    ) -> anyhow::Result<Vec<(EffectKind, EffectStatus)>> {
        Ok(self
            .list_effects_of(id)
            .await?
            .into_iter()
            .map(|effect| (effect.kind, effect.status))
            .collect())
    }
}
