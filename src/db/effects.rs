//! The outbox: effect rows and their life — claimed under a lease, then done, retried
//! later or dead.
//!
//! A claim increments `attempts` and sets `lease_until`; until the lease runs out no other
//! process (or loop) takes the row. On PostgreSQL the claim also skips rows another replica
//! is claiming at that instant (`FOR UPDATE SKIP LOCKED`), so replicas never wait on each
//! other. A process killed mid-effect leaves its lease to run out, and the effect is taken
//! again: effects must be idempotent, and are.

use std::time::Duration;

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{effects, shipments};
use super::{Database, now_ms, with_connection};
use crate::domain::{EffectKind, SessionId, ShipmentStatus};

/// Sets a shipment's status on `$conn`; a macro so it runs inside any transaction.
macro_rules! set_shipment_status {
    ($conn:ident, $session_id:expr, $status:expr, $now:expr) => {
        diesel::update(shipments::table.find($session_id))
            .set((
                shipments::status.eq($status.as_str()),
                shipments::updated_at.eq($now),
            ))
            .execute($conn)
            .await?
    };
}
/// An effect claimed for one attempt.
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedEffect {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub session_id: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// Including this one.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
}

/// An effect as an operator sees it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = effects)]
pub struct EffectView {
    pub id: i64,
    pub session_id: String,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

const CLAIM_SQLITE: &str = "UPDATE effects SET lease_until = $1, attempts = attempts + 1, updated_at = $2 \
     WHERE id IN (SELECT id FROM effects WHERE status = 'pending' AND next_attempt_at <= $2 \
     AND (lease_until IS NULL OR lease_until <= $2) ORDER BY next_attempt_at LIMIT $3) \
     RETURNING id, session_id, kind, attempts";

const CLAIM_POSTGRES: &str = "UPDATE effects SET lease_until = $1, attempts = attempts + 1, updated_at = $2 \
     WHERE id IN (SELECT id FROM effects WHERE status = 'pending' AND next_attempt_at <= $2 \
     AND (lease_until IS NULL OR lease_until <= $2) ORDER BY next_attempt_at LIMIT $3 \
     FOR UPDATE SKIP LOCKED) \
     RETURNING id, session_id, kind, attempts";

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Database {
    /// Claims up to `limit` due effects for one attempt each, leased for `lease`.
    pub async fn claim_effects(
        &self,
        limit: usize,
        lease: Duration,
    ) -> anyhow::Result<Vec<ClaimedEffect>> {
        let now = now_ms();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = match self {
            Self::Sqlite(_) => CLAIM_SQLITE,
            Self::Postgres(_) => CLAIM_POSTGRES,
        };
        with_connection!(self, |conn| {
            diesel::sql_query(sql)
                .bind::<BigInt, _>(now.saturating_add(millis(lease)))
                .bind::<BigInt, _>(now)
                .bind::<BigInt, _>(limit)
                .load::<ClaimedEffect>(conn)
                .await
                .context("could not claim due effects")
        })
    }

    /// Marks an effect done.
    pub async fn complete_effect(&self, id: i64) -> anyhow::Result<()> {
        self.settle_effect(id, "done", now_ms(), None).await
    }

    /// Releases an effect to be tried again at `at` (ms since the epoch).
    pub async fn retry_effect_at(&self, id: i64, at: i64, error: &str) -> anyhow::Result<()> {
        self.settle_effect(id, "pending", at, Some(error)).await
    }

    /// Gives up on an effect: it stays visible, dead, until an operator retries it.
    pub async fn bury_effect(&self, id: i64, error: &str) -> anyhow::Result<()> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let (session_id, kind) = diesel::update(effects::table.find(id))
                    .set((
                        effects::status.eq("dead"),
                        effects::lease_until.eq(None::<i64>),
                        effects::last_error.eq(error),
                        effects::updated_at.eq(now),
                    ))
                    .returning((effects::session_id, effects::kind))
                    .get_result::<(String, String)>(conn)
                    .await?;
                if kind == EffectKind::Shipment.as_str() {
                    set_shipment_status!(conn, &session_id, ShipmentStatus::Failed, now);
                }
                Ok::<_, anyhow::Error>(())
            })
            .await
            .context("could not mark the effect dead")
        })
    }

    /// Makes a dead effect pending again, with a fresh count of attempts. False when no
    /// dead effect has this id.
    pub async fn revive_effect(&self, id: i64) -> anyhow::Result<bool> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let revived =
                    diesel::update(effects::table.find(id).filter(effects::status.eq("dead")))
                        .set((
                            effects::status.eq("pending"),
                            effects::attempts.eq(0),
                            effects::next_attempt_at.eq(now),
                            effects::lease_until.eq(None::<i64>),
                            effects::updated_at.eq(now),
                        ))
                        .returning((effects::session_id, effects::kind))
                        .get_result::<(String, String)>(conn)
                        .await
                        .optional()?;
                let Some((session_id, kind)) = revived else {
                    return Ok::<_, anyhow::Error>(false);
                };
                if kind == EffectKind::Shipment.as_str() {
                    set_shipment_status!(conn, &session_id, ShipmentStatus::Pending, now);
                }
                Ok(true)
            })
            .await
            .context("could not retry the effect")
        })
    }

    async fn settle_effect(
        &self,
        id: i64,
        status: &str,
        next_attempt_at: i64,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        with_connection!(self, |conn| {
            diesel::update(effects::table.find(id))
                .set((
                    effects::status.eq(status),
                    effects::next_attempt_at.eq(next_attempt_at),
                    effects::lease_until.eq(None::<i64>),
                    effects::last_error.eq(error),
                    effects::updated_at.eq(now),
                ))
                .execute(conn)
                .await
                .context("could not update the effect")?;
        });
        Ok(())
    }

    /// Effects for an operator, newest first; only those with `status` when given.
    pub async fn list_effects(
        &self,
        status: Option<&str>,
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
    pub async fn effects_of(&self, id: &SessionId) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self
            .list_effects_of(id)
            .await?
            .into_iter()
            .map(|effect| (effect.kind, effect.status))
            .collect())
    }

    /// Records where a session's shipment stands.
    pub async fn set_shipment_status(
        &self,
        session_id: &str,
        status: ShipmentStatus,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        with_connection!(self, |conn| {
            let update = async {
                set_shipment_status!(conn, session_id, status, now);
                Ok::<_, anyhow::Error>(())
            };
            update.await.context("could not update the shipment")
        })
    }
}
