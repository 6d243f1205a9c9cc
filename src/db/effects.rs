//! The outbox: effect rows and their life — claimed under a lease, then done, retried
//! later or dead.
//!
//! A claim increments `attempts`, sets `lease_until` by the database's clock and takes the
//! next `lease` number, the attempt's fencing token. Until the lease runs out no other
//! process (or loop) takes the row; on PostgreSQL the claim also skips rows another replica
//! is claiming or settling at that instant (`FOR UPDATE SKIP LOCKED`). Every write an
//! attempt makes afterwards — renewing the lease, done, retry, dead, released — holds only
//! while the row still carries the attempt's token ([`Fence`]): an attempt whose lease
//! passed to another changes nothing, and is told so.

use std::time::Duration;

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::prepared::Prepared;
use super::schema::{effects, shipments};
use super::types::DbNow;
use super::{Commit, Database, Lane, now_ms, with_connection};
use crate::domain::{EffectKind, EffectStatus, ShipmentStatus, Status};

/// An effect claimed for one attempt.
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedEffect {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub session_id: String,
    #[diesel(sql_type = Text)]
    pub kind: EffectKind,
    /// Including this one.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// The fencing token this attempt holds.
    #[diesel(sql_type = BigInt)]
    pub lease: i64,
    /// The session's status when the effect was claimed.
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub session_status: Option<String>,
    /// The trace of the record that enqueued it, when traces were exported.
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub traceparent: Option<String>,
    /// Empty for the one of its kind; a refund's id for what that refund alone asked for.
    #[diesel(sql_type = Text)]
    pub subject: String,
}

impl ClaimedEffect {
    /// What the effect becomes instead of being attempted, given its session's status:
    /// after a full refund, a receipt, a stock movement or a shipment is cancelled (a
    /// shipment tried before may have reached the warehouse, and is asked back); while a
    /// dispute is open, a shipment is held.
    pub fn set_aside(&self) -> Option<EffectStatus> {
        let status = self.session_status.as_deref().and_then(Status::parse)?;
        match (status, self.kind) {
            (
                Status::Refunded,
                EffectKind::Receipt | EffectKind::Inventory | EffectKind::Shipment,
            ) => Some(EffectStatus::Cancelled),
            (Status::Disputed, EffectKind::Shipment) => Some(EffectStatus::Held),
            _ => None,
        }
    }

    pub fn fence(&self) -> Fence {
        Fence {
            id: self.id,
            lease: self.lease,
        }
    }
}

/// What an attempt's writes are conditional on: the effect still pending, and still
/// leased to this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub id: i64,
    pub lease: i64,
}

/// The rows of `effects` an attempt may still write, as a filter.
macro_rules! fenced {
    ($fence:expr) => {
        effects::table
            .filter(effects::id.eq($fence.id))
            .filter(effects::lease.eq($fence.lease))
            .filter($crate::db::effects::is_pending())
    };
}
pub(crate) use fenced;

/// The update that marks an attempt's effect done, if its fence still holds; a macro so
/// it runs inside any transaction, at `$now` (ms since the epoch).
macro_rules! mark_done {
    ($fence:expr, $now:expr) => {
        diesel::update($crate::db::effects::fenced!($fence)).set((
            effects::status.eq(EffectStatus::Done),
            effects::lease_until.eq(None::<i64>),
            effects::last_error.eq(None::<String>),
            effects::updated_at.eq($now),
        ))
    };
}
pub(crate) use mark_done;

/// `status = 'pending'`, written out rather than bound: SQLite matches a bound value
/// against the condition of the partial index `effects_due` by preparing the statement
/// again for every new binding.
pub(crate) fn is_pending() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql("effects.status = 'pending'")
}

/// Takes session `$id`'s row lock on `$conn`, as a refund or dispute applying to it does,
/// and evaluates to its status now (`None` when it is not recorded), or returns the
/// error; an attempt that checks this way never misses what they did meanwhile. A macro,
/// so that it runs inside any transaction on either backend.
macro_rules! lock_session_status {
    ($conn:ident, $id:expr) => {
        diesel::update($crate::db::schema::checkout_sessions::table.find($id))
            .set(
                $crate::db::schema::checkout_sessions::updated_at
                    .eq($crate::db::schema::checkout_sessions::updated_at),
            )
            .returning($crate::db::schema::checkout_sessions::status)
            .get_result::<$crate::domain::Status>($conn)
            .await
            .optional()?
    };
}
pub(crate) use lock_session_status;

/// Sets a shipment's status on `$conn`; a macro so it runs inside any transaction.
macro_rules! set_shipment_status {
    ($conn:ident, $session_id:expr, $status:expr) => {
        diesel::update(shipments::table.find($session_id))
            .set((
                shipments::status.eq($status),
                shipments::updated_at.eq(now_ms()),
            ))
            .execute($conn)
            .await?
    };
}

mod aside;
mod notices;
mod warehouse;
pub use aside::Aside;
pub use warehouse::CancelNeed;
mod claim;
#[cfg(test)]
pub(crate) use claim::claim_effects_postgres;
mod operator;
pub use operator::EffectView;

/// [`Database::complete_effects`] on PostgreSQL (`$1` now, `$2`, `$3` ids and leases).
/// Each effect is looked up by its key alone, and locked there, so that its lease and
/// status are checked on its latest version. Joined on the ids with the status beside
/// them, the plan PostgreSQL caches read every pending effect through the partial index
/// `effects_due` to find the few that ended.
const COMPLETE_POSTGRES: &str = "UPDATE effects SET status = 'done', lease_until = NULL, \
     last_error = NULL, updated_at = $1 \
     FROM unnest($2::bigint[], $3::bigint[]) AS settled(id, lease), \
     LATERAL (SELECT id, lease, status FROM effects ended WHERE ended.id = settled.id \
     LIMIT 1 FOR UPDATE) AS found, \
     (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed \
     WHERE effects.id = found.id AND found.lease = settled.lease \
     AND found.status = 'pending' RETURNING effects.id, effects.lease";

/// Marks the effects `fences` name done on `conn`, each only while its lease is the
/// attempt's; returns the ids and leases of those it marked.
pub(crate) async fn complete_effects_postgres(
    conn: &mut AsyncPgConnection,
    now: i64,
    fences: &[Fence],
) -> QueryResult<Vec<(i64, i64)>> {
    #[derive(QueryableByName)]
    struct Done {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = BigInt)]
        lease: i64,
    }
    // Locked in the order of their ids, so that two batches never wait for each other.
    let mut sorted: Vec<(i64, i64)> = fences.iter().map(|fence| (fence.id, fence.lease)).collect();
    sorted.sort_unstable();
    let (ids, leases): (Vec<i64>, Vec<i64>) = sorted.into_iter().unzip();
    let marking = diesel::sql_query(COMPLETE_POSTGRES)
        .bind::<BigInt, _>(now)
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Array<BigInt>, _>(leases);
    let done = Prepared(marking).load::<Done>(conn).await?;
    Ok(done.into_iter().map(|done| (done.id, done.lease)).collect())
}

impl Database {
    /// Extends an attempt's lease to `lease` from now. False when the lease is no longer
    /// the attempt's, or the attempt has already recorded its end (a renewal that arrives
    /// late must not lease the effect again). On PostgreSQL this runs on a connection of
    /// its own, so a busy pool cannot let a lease lapse; a row locked elsewhere (by the
    /// attempt itself, moving stock) fails it at once, and the next renewal tries again.
    pub async fn renew_lease(&self, fence: Fence, lease: Duration) -> anyhow::Result<bool> {
        macro_rules! renew {
            ($conn:expr) => {
                Prepared(
                    diesel::update(fenced!(fence).filter(effects::lease_until.is_not_null()))
                        .set(effects::lease_until.eq(DbNow::after(lease).nullable())),
                )
                .execute($conn)
                .await
                .map(|rows| rows == 1)
                .context("could not renew the effect's lease")
            };
        }
        match self {
            Self::Postgres(postgres) => postgres.on_renewals(async |conn| renew!(conn)).await,
            Self::Sqlite(_) => with_connection!(self, |conn| renew!(conn)),
        }
    }

    /// Marks an effect done. False when the lease is no longer the attempt's.
    pub async fn complete_effect(&self, fence: Fence) -> anyhow::Result<bool> {
        let done = self.complete_effects(&[fence]).await?;
        Ok(done.into_iter().next().unwrap_or(false))
    }

    /// Marks effects done in one transaction (a statement on PostgreSQL, a turn on SQLite):
    /// for each fence, false when its lease is no longer the attempt's; on an error, none.
    /// Neither backend waits for the disk: a mark a power cut loses does the effect again.
    pub async fn complete_effects(&self, fences: &[Fence]) -> anyhow::Result<Vec<bool>> {
        let now = now_ms();
        match self {
            Self::Postgres(postgres) => {
                let waiting = super::Timing::start();
                let done = postgres.on_settlement(async |conn| {
                    let _working = waiting.connected();
                    let done = complete_effects_postgres(conn, now, fences).await;
                    done.context("could not mark effects done")
                });
                let done = done.await?;
                Ok(fences
                    .iter()
                    .map(|fence| done.contains(&(fence.id, fence.lease)))
                    .collect())
            }
            Self::Sqlite(_) => with_connection!(self, Lane::Settlement, Commit::Written, |conn| {
                conn.transaction(async |conn| {
                    let mut done = Vec::with_capacity(fences.len());
                    for fence in fences {
                        let rows = Prepared(mark_done!(fence, now)).execute(conn).await?;
                        done.push(rows == 1);
                    }
                    Ok::<_, diesel::result::Error>(done)
                })
                .await
                .context("could not mark effects done")
            }),
        }
    }

    /// Releases an effect to be tried again `after` this, by the database's clock. False
    /// when the lease is no longer the attempt's.
    pub async fn retry_effect(
        &self,
        fence: Fence,
        after: Duration,
        error: &str,
    ) -> anyhow::Result<bool> {
        self.settle_effect(fence, EffectStatus::Pending, after, Some(error))
            .await
    }

    /// Hands an effect back without counting the attempt, due `after` this: what a process
    /// shutting down does with work it could not begin (at once), or one that finds it is
    /// still attempting the effect itself (a little later).
    pub async fn release_effect(&self, fence: Fence, after: Duration) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            diesel::update(fenced!(fence))
                .set((
                    effects::attempts.eq(effects::attempts - 1),
                    effects::next_attempt_at.eq(DbNow::after(after)),
                    effects::lease_until.eq(None::<i64>),
                    effects::updated_at.eq(now_ms()),
                ))
                .execute(conn)
                .await
                .map(|rows| rows == 1)
                .context("could not release the effect")
        })
    }

    /// Gives up on an effect: it stays visible, dead, until an operator retries it. A dead
    /// shipment shows as failed. False when the lease is no longer the attempt's.
    pub async fn bury_effect(&self, fence: Fence, error: &str) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let buried = diesel::update(fenced!(fence))
                    .set((
                        effects::status.eq(EffectStatus::Dead),
                        effects::lease_until.eq(None::<i64>),
                        effects::last_error.eq(error),
                        effects::updated_at.eq(now_ms()),
                    ))
                    .returning((effects::session_id, effects::kind))
                    .get_result::<(String, EffectKind)>(conn)
                    .await
                    .optional()?;
                let Some((session_id, kind)) = buried else {
                    return Ok::<_, anyhow::Error>(false);
                };
                if kind == EffectKind::Shipment {
                    set_shipment_status!(conn, &session_id, ShipmentStatus::Failed);
                }
                Ok(true)
            })
            .await
            .context("could not mark the effect dead")
        })
    }

    async fn settle_effect(
        &self,
        fence: Fence,
        status: EffectStatus,
        after: Duration,
        error: Option<&str>,
    ) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            diesel::update(fenced!(fence))
                .set((
                    effects::status.eq(status),
                    effects::next_attempt_at.eq(DbNow::after(after)),
                    effects::lease_until.eq(None::<i64>),
                    effects::last_error.eq(error),
                    effects::updated_at.eq(now_ms()),
                ))
                .execute(conn)
                .await
                .map(|rows| rows == 1)
                .context("could not update the effect")
        })
    }
}
