//! An effect set aside instead of attempted: cancelled because its session was refunded
//! in full first, or held because a dispute of its payment is open.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::Fence;
use crate::db::schema::{checkout_sessions, effects, shipments};
use crate::db::{Database, now_ms, with_connection};
use crate::domain::{EffectKind, EffectStatus, ShipmentStatus, Status};

/// What became of an effect to be set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aside {
    /// Cancelled or held, and its shipment with it.
    Done,
    /// The lease is no longer the attempt's: another attempt decides.
    Superseded,
    /// The dispute was decided meanwhile: the effect is to be attempted after all.
    Attempt,
}

impl Database {
    /// Sets an attempt's effect aside as `to` ([`EffectStatus::Cancelled`] after a full
    /// refund, [`EffectStatus::Held`] while a dispute is open; see
    /// [`ClaimedEffect::set_aside`](super::ClaimedEffect::set_aside)), with its shipment.
    /// An effect is held only while its session is still disputed, checked under the
    /// session's row lock, so a dispute won at this moment never leaves it held.
    pub async fn set_aside(
        &self,
        fence: Fence,
        session_id: &str,
        kind: EffectKind,
        to: EffectStatus,
    ) -> anyhow::Result<Aside> {
        let now = now_ms();
        let shipment_to = match to {
            EffectStatus::Held => ShipmentStatus::Held,
            _ => ShipmentStatus::Cancelled,
        };
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                if to == EffectStatus::Held {
                    let disputed = diesel::update(
                        checkout_sessions::table
                            .find(session_id)
                            .filter(checkout_sessions::status.eq(Status::Disputed)),
                    )
                    .set(checkout_sessions::updated_at.eq(checkout_sessions::updated_at))
                    .execute(conn)
                    .await?
                        == 1;
                    if !disputed {
                        return Ok(Aside::Attempt);
                    }
                }
                let set = diesel::update(fenced!(fence))
                    .set((
                        effects::status.eq(to),
                        effects::lease_until.eq(None::<i64>),
                        effects::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?
                    == 1;
                if !set {
                    return Ok(Aside::Superseded);
                }
                if kind == EffectKind::Shipment {
                    diesel::update(
                        shipments::table
                            .find(session_id)
                            .filter(shipments::status.eq(ShipmentStatus::Pending)),
                    )
                    .set((
                        shipments::status.eq(shipment_to),
                        shipments::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                }
                Ok::<_, diesel::result::Error>(Aside::Done)
            })
            .await
            .context("could not set the effect aside")
        })
    }
}
