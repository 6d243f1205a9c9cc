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
use tracing::Instrument;

use super::{Attempt, EffectError, Effected, SendEmail, Transport};
use crate::access::AccessSigner;
use crate::configuration::Config;
use crate::db::Database;
use crate::domain::{
    AccessGrant, EffectKind, ItemLine, Locale, Outcome, SessionId, format_money, refunded_items,
};

/// The emails a customer may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Email {
    /// The receipt for a fulfilled session.
    Receipt,
    /// The notice that a delayed payment failed.
    PaymentFailed,
    /// The notice that the order was refunded in full, or, for a refund's own effect (its
    /// subject the refund's id), that the items the refund names were.
    Refunded,
}

impl Email {
    /// The effect kind's name, which ends the `Message-ID` and names the `.eml` file.
    fn name(self) -> &'static str {
        match self {
            Self::Receipt => EffectKind::Receipt,
            Self::PaymentFailed => EffectKind::PaymentFailedEmail,
            Self::Refunded => EffectKind::RefundEmail,
        }
        .as_str()
    }
}

/// What both emails show, whichever format.
struct EmailView<'a> {
    shop: &'a str,
    shop_url: &'a str,
    session_id: &'a str,
    order_url: String,
    items: Vec<ItemLine>,
    total: Option<String>,
    /// A test-mode order: no real money moved, and the email says so.
    test: bool,
    address: Vec<String>,
    /// The grants that still give access, their links signed.
    access: Vec<AccessGrant>,
    /// Whether the order came with any access, given or since taken back.
    had_access: bool,
    /// A refund of some items only: what it gave back.
    refund: Option<RefundView>,
}

/// What a refund of some items gave back, as its email shows it.
struct RefundView {
    amount: Option<String>,
    /// Quantity and name of each item.
    items: Vec<(i64, String)>,
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

#[derive(Template)]
#[template(path = "email/refunded.txt")]
struct RefundedText<'a> {
    r: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "email/refunded.html")]
struct RefundedHtml<'a> {
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
    access: AccessSigner,
    /// How the emails write money.
    locale: Locale,
}

/// Sends customers' emails. Stateless between messages, so attempts run concurrently.
pub struct EmailActor {
    mailer: Arc<Mailer>,
}

impl EmailActor {
    pub fn new(db: Database, transport: Transport, config: &Config, access: AccessSigner) -> Self {
        let from = config.effects.mail_from.clone();
        Self {
            mailer: Arc::new(Mailer {
                db,
                transport,
                shop: from.name.clone().unwrap_or_else(|| "the shop".to_owned()),
                domain: from.email.domain().to_owned(),
                from,
                public_url: config.public_url.clone(),
                access,
                locale: config.locale,
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

impl Handler<SendEmail> for EmailActor {
    type Result = ResponseFuture<Result<Effected, EffectError>>;

    fn handle(&mut self, message: SendEmail, _: &mut Self::Context) -> Self::Result {
        let mailer = Arc::clone(&self.mailer);
        let span = message.attempt.span.clone();
        Box::pin(
            async move { mailer.deliver(&message.attempt, message.email).await }.instrument(span),
        )
    }
}

impl Mailer {
    #[tracing::instrument(skip_all, fields(session.id = %attempt.effect.session_id, email.kind = email.name()))]
    async fn deliver(&self, attempt: &Attempt, email: Email) -> Result<Effected, EffectError> {
        let session_id = attempt.effect.session_id.as_str();
        let id = SessionId::parse(session_id).map_err(EffectError::Permanent)?;
        let (outcome, to) = self
            .db
            .outcome_and_email(&id)
            .await
            .map_err(|e| EffectError::Retry(format!("{e:#}")))?
            .ok_or_else(|| EffectError::Permanent("the session is not recorded".into()))?;
        let to = to
            .ok_or_else(|| EffectError::Permanent("the session has no email address".into()))?
            .parse::<Mailbox>()
            .map_err(|_| {
                EffectError::Permanent("the customer's email address is invalid".into())
            })?;
        let mut view = self.view(&outcome);
        // A refund's own email: its id, kept to what a Message-ID and a file name may hold.
        let refund: String = match email {
            Email::Refunded => attempt
                .effect
                .subject
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect(),
            _ => String::new(),
        };
        if !refund.is_empty() {
            view.refund = Some(self.refund_view(&outcome, &refund).await?);
        }
        let rendered = match email {
            Email::Receipt => (
                format!(
                    "{}Your receipt from {}",
                    if view.test { "[Test order] " } else { "" },
                    self.shop
                ),
                ReceiptText { r: &view }.render(),
                ReceiptHtml { r: &view }.render(),
            ),
            Email::PaymentFailed => (
                "Your payment did not go through".to_owned(),
                FailedText { r: &view }.render(),
                FailedHtml { r: &view }.render(),
            ),
            Email::Refunded => (
                format!(
                    "{}{} from {} was refunded",
                    if view.test { "[Test order] " } else { "" },
                    if view.refund.is_some() {
                        "Part of your order"
                    } else {
                        "Your order"
                    },
                    self.shop
                ),
                RefundedText { r: &view }.render(),
                RefundedHtml { r: &view }.render(),
            ),
        };
        let (subject, Ok(text), Ok(html)) = rendered else {
            return Err(EffectError::Permanent("could not render the email".into()));
        };
        let name = match refund.as_str() {
            "" => format!("{session_id}.{}", email.name()),
            refund => format!("{session_id}.{}.{refund}", email.name()),
        };
        let message = Message::builder()
            .message_id(Some(format!("<{name}@{}>", self.domain)))
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| EffectError::Permanent(format!("could not build the email: {e}")))?;
        self.transport.send(message, &name, attempt).await?;
        Ok(Effected::Done)
    }

    fn view<'a>(&'a self, outcome: &'a Outcome) -> EmailView<'a> {
        let money = |minor, currency: &str| format_money(minor, currency, self.locale);
        EmailView {
            shop: &self.shop,
            shop_url: &self.public_url,
            session_id: &outcome.session_id,
            order_url: format!(
                "{}/after-checkout?session_id={}",
                self.public_url, outcome.session_id
            ),
            items: outcome.item_lines(money),
            total: outcome.formatted_total(money),
            test: !outcome.livemode,
            address: outcome
                .shipment
                .as_ref()
                .and_then(|s| s.address.as_ref())
                .map(|a| a.lines())
                .unwrap_or_default(),
            access: self.access.links(outcome, outcome.active_access()),
            had_access: !outcome.access.is_empty(),
            refund: None,
        }
    }

    /// What refund `refund_id` of `outcome`'s session gave back by item, for its email:
    /// the units of physical goods, then the digital items it names.
    async fn refund_view(
        &self,
        outcome: &Outcome,
        refund_id: &str,
    ) -> Result<RefundView, EffectError> {
        let retry = |e: anyhow::Error| EffectError::Retry(format!("{e:#}"));
        let (amount, named) = self
            .db
            .refund_amount_and_items(refund_id)
            .await
            .map_err(retry)?
            .unzip();
        let units = self
            .db
            .returned_by_refund(&outcome.session_id, refund_id)
            .await
            .map_err(retry)?;
        let shipped = outcome.shipment.iter().flat_map(|s| s.items.iter());
        let mut items: Vec<(i64, String)> = units
            .into_iter()
            .map(|(sku, quantity)| {
                let name = shipped.clone().find(|item| item.sku == sku);
                (quantity, name.map_or(sku, |item| item.name.clone()))
            })
            .collect();
        let named = named.flatten().unwrap_or_default();
        for (sku, quantity) in refunded_items(&named) {
            if let Some(grant) = outcome.access.iter().find(|grant| grant.sku == sku) {
                items.push((quantity.min(1), grant.name.clone()));
            }
        }
        Ok(RefundView {
            amount: amount
                .zip(outcome.currency.as_deref())
                .map(|(amount, currency)| format_money(amount, currency, self.locale)),
            items,
        })
    }
}
