//! The warehouse's side of a shipment: recording what it answered a request, and asking
//! it to cancel one: when to ask, and what its yes changes.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::Fence;
use crate::db::refunds::return_stock;
use crate::db::schema::{effects, shipments};
use crate::db::{Database, now_ms, with_connection};
use crate::domain::{EffectKind, EffectStatus, ShipmentStatus, Status};

/// Whether a refunded session's shipment is to be asked back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelNeed {
    /// The request is still being made: asking now could overtake it. The attempt under
    /// way, or the next, ends by `due` (milliseconds since the epoch).
    InFlight { due: i64 },
    /// The warehouse never took it (never told, refused, or already cancelled).
    Nothing,
    /// The warehouse accepted it (`accepted`), or may have from an attempt already made.
    Ask { accepted: bool },
}

impl Database {
    /// Marks a shipment effect done and records where the shipment stands, in one
    /// transaction. False when the lease is no longer the attempt's.
    ///
    /// What a refund or dispute did while the attempt ran stands: the session's row is
    /// taken first, as they take it. A shipment the warehouse accepted is `submitted`
    /// whatever happened meanwhile (a refund asks it back); one left to an operator stays
    /// `held` while a dispute is open, and is `cancelled` if the order was refunded.
    pub async fn complete_shipment(
        &self,
        fence: Fence,
        session_id: &str,
        status: ShipmentStatus,
    ) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let session = lock_session_status!(conn, session_id);
                let done = mark_done!(fence, now_ms()).execute(conn).await?;
                if done == 1 {
                    let waiting = [ShipmentStatus::Pending, ShipmentStatus::Failed];
                    let (status, from) = match (status, session) {
                        (ShipmentStatus::Submitted, _) => (status, &ShipmentStatus::ALL[..]),
                        (_, Some(Status::Refunded)) => (ShipmentStatus::Cancelled, &waiting[..]),
                        _ => (status, &waiting[..]),
                    };
                    diesel::update(
                        shipments::table
                            .find(session_id)
                            .filter(shipments::status.eq_any(from)),
                    )
                    .set((
                        shipments::status.eq(status),
                        shipments::updated_at.eq(now_ms()),
                    ))
                    .execute(conn)
                    .await?;
                }
                Ok::<_, anyhow::Error>(done == 1)
            })
            .await
            .context("could not record the shipment")
        })
    }

    /// Where session `session_id`'s shipment stands, for its cancellation.
    pub async fn shipment_cancel_need(&self, session_id: &str) -> anyhow::Result<CancelNeed> {
        let (shipment, request) = with_connection!(self, |conn| {
            let read = async {
                let shipment = shipments::table
                    .find(session_id)
                    .select(shipments::status)
                    .first::<ShipmentStatus>(conn)
                    .await
                    .optional()?;
                let request = effects::table
                    .filter(effects::session_id.eq(session_id))
                    .filter(effects::kind.eq(EffectKind::Shipment))
                    .select((
                        effects::status,
                        effects::next_attempt_at,
                        effects::lease_until,
                    ))
                    .first::<(EffectStatus, i64, Option<i64>)>(conn)
                    .await
                    .optional()?;
                Ok::<_, diesel::result::Error>((shipment, request))
            };
            read.await.context("could not read the shipment")
        })?;
        Ok(match (shipment, request) {
            (_, Some((EffectStatus::Pending, next, lease))) => CancelNeed::InFlight {
                due: next.max(lease.unwrap_or(0)),
            },
            // Held while a dispute is open: the request may yet go out when the dispute is
            // won, so the warehouse is asked once it has (looked at again within the hour).
            (_, Some((EffectStatus::Held, ..))) => CancelNeed::InFlight { due: i64::MAX },
            (Some(ShipmentStatus::Submitted), _) => CancelNeed::Ask { accepted: true },
            // An attempt that timed out, or a request that died of timeouts, may have
            // reached it.
            (Some(ShipmentStatus::Pending | ShipmentStatus::Held | ShipmentStatus::Failed), _) => {
                CancelNeed::Ask { accepted: false }
            }
            _ => CancelNeed::Nothing,
        })
    }

    /// Records that the warehouse cancelled session `session_id`'s shipment (or had none
    /// to cancel, when `asked` is false), with the attempt's effect done, in one
    /// transaction: the shipment `cancelled` and a held request cancelled when asked, and
    /// the stock put back either way. False when the lease is no longer the attempt's.
    pub async fn complete_shipment_cancel(
        &self,
        fence: Fence,
        session_id: &str,
        asked: bool,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let done = mark_done!(fence, now).execute(conn).await? == 1;
                if !done {
                    return Ok(false);
                }
                if asked {
                    diesel::update(
                        shipments::table
                            .find(session_id)
                            .filter(shipments::status.ne(ShipmentStatus::Cancelled)),
                    )
                    .set((
                        shipments::status.eq(ShipmentStatus::Cancelled),
                        shipments::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                    diesel::update(
                        effects::table
                            .filter(effects::session_id.eq(session_id))
                            .filter(effects::kind.eq(EffectKind::Shipment))
                            .filter(effects::status.eq(EffectStatus::Held)),
                    )
                    .set((
                        effects::status.eq(EffectStatus::Cancelled),
                        effects::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                }
                // Back once the goods are known not to have left: the refund left it to
                // this answer.
                return_stock!(conn, session_id, now);
                Ok::<_, diesel::result::Error>(true)
            })
            .await
            .context("could not record the shipment's cancellation")
        })
    }
}
