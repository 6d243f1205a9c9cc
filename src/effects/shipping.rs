//! `ShippingActor`: tells the warehouse what to ship, once.
//!
//! The shipment is `POST`ed as JSON to `SHIPPING_WEBHOOK_URL` with an `Idempotency-Key`
//! derived from the session, the same on every retry, so a warehouse that honours it
//! ships once however often it is asked. 2xx is success; 409 and 429 and 5xx and network
//! faults retry; any other 4xx is permanent. Without a URL the shipment waits for an
//! operator.

use actix::{Actor, Context, Handler, ResponseFuture};
use anyhow::Context as _;
use reqwest::StatusCode;
use serde_json::json;

use super::{Attempt, EffectError, Effected, Ship};
use crate::configuration::{EffectsConfig, Secret};
use crate::db::Database;
use crate::domain::{SessionId, ShipmentStatus};

/// Sends shipments to the warehouse.
pub struct ShippingActor {
    db: Database,
    client: reqwest::Client,
    url: Option<Secret>,
}

impl ShippingActor {
    pub fn new(db: Database, config: &EffectsConfig) -> anyhow::Result<Self> {
        // No timeout of reqwest's own: the attempt's deadline bounds the whole request.
        let client = reqwest::Client::builder()
            .user_agent(concat!("fulfilld/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build the shipping HTTP client")?;
        Ok(Self {
            db,
            client,
            url: config.shipping_webhook_url.clone(),
        })
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
        let client = self.client.clone();
        let url = self.url.clone();
        Box::pin(async move { ship(&db, &client, url.as_ref(), &attempt).await })
    }
}

#[tracing::instrument(skip_all, fields(session.id = %attempt.effect.session_id))]
async fn ship(
    db: &Database,
    client: &reqwest::Client,
    url: Option<&Secret>,
    attempt: &Attempt,
) -> Result<Effected, EffectError> {
    let session_id = attempt.effect.session_id.as_str();
    let retry = |e: anyhow::Error| EffectError::Retry(format!("{e:#}"));
    let record = async |status| match db
        .complete_shipment(attempt.fence(), session_id, status)
        .await
    {
        Ok(true) => Ok(Effected::Recorded),
        Ok(false) => Err(EffectError::Superseded),
        Err(error) => Err(retry(error)),
    };
    let Some(url) = url else {
        tracing::info!("shipment recorded for manual handling (no SHIPPING_WEBHOOK_URL)");
        return record(ShipmentStatus::AwaitingManualHandling).await;
    };
    let id = SessionId::parse(session_id).map_err(EffectError::Permanent)?;
    let outcome = db
        .outcome(&id)
        .await
        .map_err(retry)?
        .ok_or_else(|| EffectError::Permanent("the session is not recorded".into()))?;
    let shipment = outcome
        .shipment
        .ok_or_else(|| EffectError::Permanent("the session has no shipment".into()))?;
    // A warehouse must be able to tell a test order (nothing was paid) from a real one.
    let body = json!({
        "session_id": session_id,
        "livemode": outcome.livemode,
        "items": shipment.items,
        "address": shipment.address,
    });
    let request = client
        .post(url.expose())
        .header("Idempotency-Key", format!("fulfilld-shipment-{session_id}"))
        .json(&body)
        .send();
    if !attempt.commit() {
        return Err(EffectError::Retry(
            "too little of the attempt's time was left to ask the warehouse".into(),
        ));
    }
    let response = attempt
        .io(async {
            request.await.map_err(|e| {
                EffectError::Retry(format!("the warehouse did not answer: {}", e.without_url()))
            })
        })
        .await?;
    let status = response.status();
    if status.is_success() {
        tracing::info!(http.status = status.as_u16(), "shipment submitted");
        return record(ShipmentStatus::Submitted).await;
    }
    let reason = format!("the warehouse answered {status}");
    let permanent = status.is_client_error()
        && status != StatusCode::CONFLICT
        && status != StatusCode::TOO_MANY_REQUESTS;
    Err(if permanent {
        EffectError::Permanent(reason)
    } else {
        EffectError::Retry(reason)
    })
}
