//! `AccessActor`: tells `ACCESS_WEBHOOK_URL` of grants given, taken back, suspended and
//! restored, each notice once, signed as [`super::outbound`] says. The notice's JSON was
//! written with the change, in the same transaction, so every retry sends the same body
//! under the same `webhook-id`. A session's notices go in order: one waits while an
//! earlier one is still to be delivered (a dead one no longer holds the others back).

use actix::{Actor, Context, Handler, ResponseFuture};
use tracing::Instrument;

use super::outbound::Outbound;
use super::{Attempt, EffectError, Effected, TellAccess};
use crate::configuration::{EffectsConfig, Secret};
use crate::db::Database;

/// Sends access notices.
pub struct AccessActor {
    db: Database,
    outbound: Outbound,
    url: Option<Secret>,
}

impl AccessActor {
    pub fn new(db: Database, outbound: Outbound, config: &EffectsConfig) -> Self {
        Self {
            db,
            outbound,
            url: config.access_webhook_url.clone(),
        }
    }
}

impl Actor for AccessActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<TellAccess> for AccessActor {
    type Result = ResponseFuture<Result<Effected, EffectError>>;

    fn handle(&mut self, TellAccess(attempt): TellAccess, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        let outbound = self.outbound.clone();
        let url = self.url.clone();
        let span = attempt.span.clone();
        Box::pin(
            async move { notify(&db, &outbound, url.as_ref(), &attempt).await }.instrument(span),
        )
    }
}

#[tracing::instrument(skip_all, fields(session.id = %attempt.effect.session_id))]
async fn notify(
    db: &Database,
    outbound: &Outbound,
    url: Option<&Secret>,
    attempt: &Attempt,
) -> Result<Effected, EffectError> {
    let url = url.ok_or_else(|| {
        EffectError::Permanent("no ACCESS_WEBHOOK_URL to tell of the access".into())
    })?;
    let retry = |e: anyhow::Error| EffectError::Retry(format!("{e:#}"));
    let (session_id, id) = (attempt.effect.session_id.as_str(), attempt.effect.id);
    if let Some(due) = db.earlier_notice_due(session_id, id).await.map_err(retry)? {
        return Err(EffectError::Wait(
            "an earlier notice of this session is still to be delivered".into(),
            due,
        ));
    }
    let body = db
        .effect_body(id)
        .await
        .map_err(retry)?
        .ok_or_else(|| EffectError::Permanent("the notice has no body".into()))?;
    let id = format!("fulfilld-access-{id}");
    let status = outbound
        .post(attempt, url.expose(), &id, body, "the access system")
        .await?;
    tracing::info!(http.status = status.as_u16(), "access notice delivered");
    Ok(Effected::Done)
}
