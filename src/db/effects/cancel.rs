//! An effect not carried out: the session was refunded in full before its attempt.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::Fence;
use crate::db::schema::{effects, shipments};
use crate::db::{Database, now_ms, with_connection};
use crate::domain::{EffectKind, EffectStatus, ShipmentStatus};

impl Database {
    /// Cancels an attempt's effect, claimed after a full refund of its session (see
    /// [`ClaimedEffect::refunded_first`]): a shipment cancelled with it. False when the
    /// lease is no longer the attempt's.
    pub async fn cancel_effect(&self, fence: Fence, kind: EffectKind) -> anyhow::Result<bool> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let cancelled = diesel::update(fenced!(fence))
                    .set((
                        effects::status.eq(EffectStatus::Cancelled),
                        effects::lease_until.eq(None::<i64>),
                        effects::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?
                    == 1;
                if cancelled && kind == EffectKind::Shipment {
                    let session_id = effects::table
                        .find(fence.id)
                        .select(effects::session_id)
                        .first::<String>(conn)
                        .await?;
                    diesel::update(
                        shipments::table
                            .find(session_id)
                            .filter(shipments::status.eq(ShipmentStatus::Pending)),
                    )
                    .set((
                        shipments::status.eq(ShipmentStatus::Cancelled),
                        shipments::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                }
                Ok::<_, diesel::result::Error>(cancelled)
            })
            .await
            .context("could not cancel the effect")
        })
    }
}
