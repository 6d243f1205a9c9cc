//! `ShippingActor`: tells the warehouse what to ship, once, and asks it to cancel a
//! shipment of an order refunded in full, or the units a partial refund names.
//!
//! A shipment is `POST`ed as JSON (`"type": "shipment.requested"`) to
//! `SHIPPING_WEBHOOK_URL` with an `Idempotency-Key` and `webhook-id` derived from the
//! session, the same on every retry, so a warehouse that honours it ships once however
//! often it is asked; the units refunds kept from it or put back in stock are left out. A
//! cancellation (`"shipment.cancel_requested"`) has a key of its own (one per refund, for
//! a refund's units), and a 404 or 410 to it, about a shipment the warehouse never said it
//! accepted, means it never had it, so nothing is left to cancel. Both are signed as
//! [`super::outbound`] says. Without a URL the shipment waits for an operator.

use actix::{Actor, Context, Handler, ResponseFuture};
use reqwest::StatusCode;
use tracing::Instrument;

use super::outbound::{Outbound, judge};
use super::{Attempt, CancelShipment, EffectError, Effected, Ship};
use crate::configuration::{EffectsConfig, Secret};
use crate::db::Database;
use crate::db::effects::CancelNeed;
use crate::domain::{SessionId, ShipmentNotice, ShipmentRequest, ShipmentStatus};

/// Sends shipments and their cancellations to the warehouse.
pub struct ShippingActor {
    db: Database,
    outbound: Outbound,
    url: Option<Secret>,
}

impl ShippingActor {
    pub fn new(db: Database, outbound: Outbound, config: &EffectsConfig) -> Self {
        Self {
            db,
            outbound,
            url: config.shipping_webhook_url.clone(),
        }
    }
}

impl Actor for ShippingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<Ship> for ShippingActor {
    type Result = ResponseFuture<Result<Effected, EffectError>>;

    fn handle(&mut self, Ship(attempt): Ship, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        let outbound = self.outbound.clone();
        let url = self.url.clone();
        let span = attempt.span.clone();
        Box::pin(async move { ship(&db, &outbound, url.as_ref(), &attempt).await }.instrument(span))
    }
}

impl Handler<CancelShipment> for ShippingActor {
    type Result = ResponseFuture<Result<Effected, EffectError>>;

    fn handle(
        &mut self,
        CancelShipment(attempt): CancelShipment,
        _: &mut Self::Context,
    ) -> Self::Result {
        let db = self.db.clone();
        let outbound = self.outbound.clone();
        let url = self.url.clone();
        let span = attempt.span.clone();
        Box::pin(
            async move { cancel(&db, &outbound, url.as_ref(), &attempt).await }.instrument(span),
        )
    }
}

/// What a notice to the warehouse lists of the shipment's items.
enum Listed<'a> {
    /// Every item, as bought: the shipment to cancel.
    All,
    /// What is left to ship: the units refunds kept from it or put back in stock left
    /// out.
    Left,
    /// Only these units (SKU, quantity): those a refund asks to cancel.
    Only(&'a [(String, i64)]),
}

/// The shipment's JSON, as the warehouse is sent it with `request`, listing `listed`. A
/// warehouse must be able to tell a test order (nothing was paid) from a real one.
async fn body(
    db: &Database,
    session_id: &str,
    request: ShipmentRequest,
    listed: Listed<'_>,
) -> Result<String, EffectError> {
    let retry = |e: anyhow::Error| EffectError::Retry(format!("{e:#}"));
    let id = SessionId::parse(session_id).map_err(EffectError::Permanent)?;
    let mut outcome = db
        .outcome(&id)
        .await
        .map_err(retry)?
        .ok_or_else(|| EffectError::Permanent("the session is not recorded".into()))?;
    if let Listed::Left = listed {
        db.leave_off_shipment(&mut outcome).await.map_err(retry)?;
    }
    let shipment = outcome
        .shipment
        .ok_or_else(|| EffectError::Permanent("the session has no shipment".into()))?;
    let mut items = shipment.items;
    if let Listed::Only(units) = listed {
        for item in &mut items {
            let named: i64 = units
                .iter()
                .filter(|(sku, _)| *sku == item.sku)
                .map(|(_, quantity)| quantity)
                .sum();
            item.quantity = named.min(item.quantity);
        }
        items.retain(|item| item.quantity > 0);
    }
    let notice = ShipmentNotice {
        address: shipment.address,
        items,
        livemode: outcome.livemode,
        session_id: session_id.to_owned(),
        request,
    };
    notice
        .to_json()
        .map_err(|e| EffectError::Permanent(format!("the shipment could not be written: {e}")))
}

#[tracing::instrument(skip_all, fields(session.id = %attempt.effect.session_id))]
async fn ship(
    db: &Database,
    outbound: &Outbound,
    url: Option<&Secret>,
    attempt: &Attempt,
) -> Result<Effected, EffectError> {
    let session_id = attempt.effect.session_id.as_str();
    let record = async |status| match db
        .complete_shipment(attempt.fence(), session_id, status)
        .await
    {
        Ok(true) => Ok(Effected::Recorded),
        Ok(false) => Err(EffectError::Superseded),
        Err(error) => Err(EffectError::Retry(format!("{error:#}"))),
    };
    let Some(url) = url else {
        tracing::info!("shipment recorded for manual handling (no SHIPPING_WEBHOOK_URL)");
        return record(ShipmentStatus::AwaitingManualHandling).await;
    };
    let body = body(db, session_id, ShipmentRequest::Requested, Listed::Left).await?;
    let id = format!("fulfilld-shipment-{session_id}");
    let status = outbound
        .post(attempt, url.expose(), &id, body, "the warehouse")
        .await?;
    tracing::info!(http.status = status.as_u16(), "shipment submitted");
    record(ShipmentStatus::Submitted).await
}

/// Asks the warehouse to cancel the shipment of a session refunded in full, or the units a
/// refund gave back by item (the effect's subject is then the refund's id), once the
/// request itself has ended: its answer puts the stock back.
#[tracing::instrument(skip_all, fields(session.id = %attempt.effect.session_id))]
async fn cancel(
    db: &Database,
    outbound: &Outbound,
    url: Option<&Secret>,
    attempt: &Attempt,
) -> Result<Effected, EffectError> {
    let session_id = attempt.effect.session_id.as_str();
    let refund = attempt.effect.subject.as_str();
    let retry = |e: anyhow::Error| EffectError::Retry(format!("{e:#}"));
    let units = match refund {
        "" => None,
        refund => Some(
            db.returned_by_refund(session_id, refund)
                .await
                .map_err(retry)?,
        ),
    };
    let asked = match db.shipment_cancel_need(session_id).await.map_err(retry)? {
        CancelNeed::InFlight { due } => {
            return Err(EffectError::Wait(
                "the shipment request is still being made; asking to cancel it waits".into(),
                due,
            ));
        }
        CancelNeed::Nothing => false,
        CancelNeed::Ask { accepted } => {
            let url = url.ok_or_else(|| {
                EffectError::Permanent("no SHIPPING_WEBHOOK_URL to ask the warehouse".into())
            })?;
            let (listed, id) = match &units {
                None => (
                    Listed::All,
                    format!("fulfilld-shipment-cancel-{session_id}"),
                ),
                Some(units) => (
                    Listed::Only(units),
                    format!("fulfilld-shipment-cancel-{session_id}-{refund}"),
                ),
            };
            let body = body(db, session_id, ShipmentRequest::CancelRequested, listed).await?;
            let status = outbound
                .answer(attempt, url.expose(), &id, body, "the warehouse")
                .await?;
            if !accepted && [StatusCode::NOT_FOUND, StatusCode::GONE].contains(&status) {
                // The attempts that may have reached it did not: the goods never left. (Of
                // one it accepted, a 404 more likely means it shipped: an operator looks.)
                tracing::info!(
                    http.status = status.as_u16(),
                    "the warehouse has no such shipment; nothing is left to cancel"
                );
            } else {
                judge(status, "the warehouse")?;
                tracing::info!(http.status = status.as_u16(), "shipment cancelled");
            }
            true
        }
    };
    let completed = match units {
        None => {
            db.complete_shipment_cancel(attempt.fence(), session_id, asked)
                .await
        }
        Some(_) => {
            db.complete_items_cancel(attempt.fence(), session_id, refund)
                .await
        }
    };
    match completed {
        Ok(true) => Ok(Effected::Recorded),
        Ok(false) => Err(EffectError::Superseded),
        Err(error) => Err(retry(error)),
    }
}
