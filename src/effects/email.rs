//! `EmailActor`: the receipt for a fulfilled session and the notice of a failed payment.
//!
//! Each message has a deterministic `Message-ID` per (session, kind), so a retry after a
//! crash in the window between the server's acceptance and our commit is recognisable as
//! the same message by any mail system that deduplicates on it.

use std::sync::Arc;

use actix::{Actor, Context, Handler, ResponseFuture};
use askama::Template;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

use super::{EffectError, Effected, Perform, Transport};
use crate::configuration::Config;
use crate::db::Database;
use crate::domain::{AccessGrant, EffectKind, ItemLine, Outcome, SessionId};

/// What both emails show, whichever format.
struct EmailView<'a> {
    shop: &'a str,
    shop_url: &'a str,
    session_id: &'a str,
    order_url: String,
    items: Vec<ItemLine>,
    total: Option<String>,
    address: Vec<String>,
    access: &'a [AccessGrant],
}

#[derive(Template)]
#[template(path = "email/receipt.txt")]
struct ReceiptText<'a> {
    r: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "email/receipt.html")]
struct ReceiptHtml<'a> {
    r: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "email/payment_failed.txt")]
struct FailedText<'a> {
    r: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "email/payment_failed.html")]
struct FailedHtml<'a> {
    r: &'a EmailView<'a>,
}

/// Composes and sends; shared by the actor's concurrent handlers.
struct Mailer {
    db: Database,
    transport: Transport,
    from: Mailbox,
    shop: String,
    /// The part after `@` in `MAIL_FROM`, for `Message-ID`s.
    domain: String,
    public_url: String,
}

/// Sends customers' emails. Stateless between messages, so attempts run concurrently.
pub struct EmailActor {
    mailer: Arc<Mailer>,
}

impl EmailActor {
    pub fn new(db: Database, transport: Transport, config: &Config) -> Self {
        let from = config.effects.mail_from.clone();
        Self {
            mailer: Arc::new(Mailer {
                db,
                transport,
                shop: from.name.clone().unwrap_or_else(|| "the shop".to_owned()),
                domain: from.email.domain().to_owned(),
                from,
                public_url: config.public_url.clone(),
            }),
        }
    }
}

impl Actor for EmailActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<Perform> for EmailActor {
    type Result = ResponseFuture<Result<Effected, EffectError>>;

    fn handle(&mut self, message: Perform, _: &mut Self::Context) -> Self::Result {
        let mailer = Arc::clone(&self.mailer);
        Box::pin(async move {
            mailer
                .deliver(&message.effect.session_id, message.kind)
                .await
        })
    }
}

impl Mailer {
    #[tracing::instrument(skip_all, fields(session.id = %session_id, email.kind = kind.as_str()))]
    async fn deliver(&self, session_id: &str, kind: EffectKind) -> Result<Effected, EffectError> {
        let id = SessionId::parse(session_id).map_err(EffectError::Permanent)?;
        let outcome = self
            .db
            .outcome(&id)
            .await
            .map_err(|e| EffectError::Retry(format!("{e:#}")))?
            .ok_or_else(|| EffectError::Permanent("the session is not recorded".into()))?;
        let to = self
            .db
            .customer_email(session_id)
            .await
            .map_err(|e| EffectError::Retry(format!("{e:#}")))?
            .ok_or_else(|| EffectError::Permanent("the session has no email address".into()))?
            .parse::<Mailbox>()
            .map_err(|_| {
                EffectError::Permanent("the customer's email address is invalid".into())
            })?;
        let view = self.view(&outcome);
        let rendered = match kind {
            EffectKind::Receipt => (
                format!("Your receipt from {}", self.shop),
                ReceiptText { r: &view }.render(),
                ReceiptHtml { r: &view }.render(),
            ),
            EffectKind::PaymentFailedEmail => (
                "Your payment did not go through".to_owned(),
                FailedText { r: &view }.render(),
                FailedHtml { r: &view }.render(),
            ),
            EffectKind::Inventory | EffectKind::Shipment => {
                return Err(EffectError::Permanent(format!(
                    "{} is not an email",
                    kind.as_str()
                )));
            }
        };
        let (subject, Ok(text), Ok(html)) = rendered else {
            return Err(EffectError::Permanent("could not render the email".into()));
        };
        let message = Message::builder()
            .message_id(Some(format!(
                "<{session_id}.{}@{}>",
                kind.as_str(),
                self.domain
            )))
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| EffectError::Permanent(format!("could not build the email: {e}")))?;
        self.transport
            .send(message, &format!("{session_id}.{}", kind.as_str()))
            .await?;
        Ok(Effected::Done)
    }

    fn view<'a>(&'a self, outcome: &'a Outcome) -> EmailView<'a> {
        EmailView {
            shop: &self.shop,
            shop_url: &self.public_url,
            session_id: &outcome.session_id,
            order_url: format!(
                "{}/after-checkout?session_id={}",
                self.public_url, outcome.session_id
            ),
            items: outcome.item_lines(),
            total: outcome.formatted_total(),
            address: outcome
                .shipment
                .as_ref()
                .and_then(|s| s.address.as_ref())
                .map(|a| a.lines())
                .unwrap_or_default(),
            access: &outcome.access,
        }
    }
}
