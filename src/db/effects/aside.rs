//! An effect set aside instead of attempted: cancelled because its session was refunded
//! in full first, or held because a dispute of its payment is open.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::Fence;
use crate::db::schema::{effects, shipments};
use crate::db::{Database, now_ms, with_connection};
use crate::domain::{EffectKind, EffectStatus, ShipmentStatus, Status};

/// What became of an effect to be set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aside {
    /// Cancelled or held (the status it got), and its shipment with it.
    Done(EffectStatus),
    /// The lease is no longer the attempt's: another attempt decides.
    Superseded,
    /// The session is neither refunded in full nor disputed now: the effect is to be
    /// attempted after all.
    Attempt,
}

impl Database {
    /// Sets an attempt's effect aside, as its session's status says now, read under the
    /// session's row lock (see [`ClaimedEffect::set_aside`](super::ClaimedEffect::set_aside)
    /// for what it says): a dispute decided at this moment, either way, is never missed.
    /// A shipment the warehouse was asked back for, cancelled, leaves its shipment to that
    /// cancellation.
    pub async fn set_aside(
        &self,
        fence: Fence,
        session_id: &str,
        kind: EffectKind,
    ) -> anyhow::Result<Aside> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let status = super::lock_session_status!(conn, session_id);
                let to = match (status, kind) {
                    (
                        Some(Status::Refunded),
                        EffectKind::Receipt | EffectKind::Inventory | EffectKind::Shipment,
                    ) => EffectStatus::Cancelled,
                    (Some(Status::Disputed), EffectKind::Shipment) => EffectStatus::Held,
                    _ => return Ok(Aside::Attempt),
                };
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
                // A shipment the refund asked the warehouse back for is left to that
                // cancellation (it could not ask without SHIPPING_WEBHOOK_URL), whatever
                // this claim's count says: an operator's revival starts it afresh.
                let asked = effects::table
                    .filter(effects::session_id.eq(session_id))
                    .filter(effects::kind.eq(EffectKind::ShipmentCancel))
                    .filter(effects::subject.eq(""))
                    .count()
                    .get_result::<i64>(conn)
                    .await?
                    > 0;
                let shipment_to = match to {
                    EffectStatus::Held => Some(ShipmentStatus::Held),
                    _ if asked => None,
                    _ => Some(ShipmentStatus::Cancelled),
                };
                if let (EffectKind::Shipment, Some(shipment_to)) = (kind, shipment_to) {
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
                Ok::<_, diesel::result::Error>(Aside::Done(to))
            })
            .await
            .context("could not set the effect aside")
        })
    }
}
