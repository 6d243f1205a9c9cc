//! Refunds an operator starts, from `fulfilld sessions refund` or the admin page: checked
//! against what the session bought, made at Stripe under an idempotency key, and then
//! reversed like any other refund, from Stripe's webhooks.

use sha2::{Digest, Sha256};

use crate::db::Database;
use crate::domain::{AccountId, Outcome, SessionId, format_amount, refunded_skus};
use crate::stripe::{GatewayError, MadeRefund, Priority, StripeGateway};

/// A refund as an operator asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAsk {
    /// Minor units; `None` refunds what is left of the payment.
    amount: Option<i64>,
    /// `SKU:QTY,…` in one order, so that the same items give the same idempotency key.
    items: Option<String>,
    /// Tells this refund from an earlier one of the same amount and items, for the
    /// idempotency key; without it, the same ask is the same refund for 24 hours.
    nonce: Option<String>,
}

/// Why a refund was not made. Nothing was asked of Stripe unless it is [`Self::Stripe`].
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    /// The operator's input, naming the field (`amount`, `items`).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0} is not recorded, so nothing of it was fulfilled to refund")]
    NotRecorded(SessionId),
    #[error("{id} is {status}: {why}")]
    Nothing {
        id: SessionId,
        status: &'static str,
        why: &'static str,
    },
    #[error("Stripe did not refund {id}: {error}")]
    Stripe { id: SessionId, error: GatewayError },
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

fn invalid(field: &'static str, message: impl Into<String>) -> RefundError {
    RefundError::Invalid {
        field,
        message: message.into(),
    }
}

impl RefundAsk {
    /// Checks an operator's `amount` (minor units) and `items` (`SKU:QTY,…`) before anything
    /// is read or asked.
    pub fn new(amount: Option<i64>, items: Option<&str>) -> Result<Self, RefundError> {
        if amount.is_some_and(|amount| amount <= 0) {
            return Err(invalid(
                "amount",
                "expected a positive amount in minor units (cents), like 500",
            ));
        }
        let items = items.map(str::trim).filter(|items| !items.is_empty());
        let items = items
            .map(|items| {
                if refunded_skus(items).len() != items.split(',').count() {
                    return Err(invalid(
                        "items",
                        "expected SKU:QTY,… with positive quantities, like TEE-M:1,EBOOK:1",
                    ));
                }
                if amount.is_none() {
                    return Err(invalid(
                        "items",
                        "give an amount too; Stripe refunds an amount, and the items only say \
                         what it is for",
                    ));
                }
                let mut entries: Vec<String> = items
                    .split(',')
                    .map(|entry| entry.replace(' ', ""))
                    .collect();
                entries.sort();
                Ok(entries.join(","))
            })
            .transpose()?;
        Ok(Self {
            amount,
            items,
            nonce: None,
        })
    }

    /// The same ask, told from earlier ones by `nonce` (the admin form's confirmation
    /// carries one, so a second refund of the same amount is a new refund, while the
    /// same confirmation sent twice is still one).
    pub fn with_nonce(self, nonce: &str) -> Self {
        Self {
            nonce: Some(nonce.to_owned()),
            ..self
        }
    }

    /// Checks the ask against what session `outcome` bought and what is left to refund.
    pub fn check(&self, outcome: &Outcome) -> Result<(), RefundError> {
        let id = SessionId::parse(&outcome.session_id).map_err(anyhow::Error::msg)?;
        let status = outcome.status.as_str();
        if !outcome.status.was_fulfilled() {
            let why = "nothing was fulfilled, so nothing is refunded";
            return Err(RefundError::Nothing { id, status, why });
        }
        let left = outcome
            .amount_total
            .map(|total| total - outcome.amount_refunded);
        if left.is_some_and(|left| left <= 0) {
            let why = "it is refunded in full already";
            return Err(RefundError::Nothing { id, status, why });
        }
        if let (Some(amount), Some(left), Some(currency)) =
            (self.amount, left, outcome.currency.as_deref())
            && amount > left
        {
            return Err(invalid(
                "amount",
                format!("only {} is left to refund", format_amount(left, currency)),
            ));
        }
        if let Some(items) = &self.items {
            let bought = bought_skus(outcome);
            if let Some(unknown) = refunded_skus(items)
                .into_iter()
                .find(|sku| !bought.contains(sku))
            {
                return Err(invalid(
                    "items",
                    format!("{id} has no {unknown}; it has {}", bought.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The idempotency key of this refund of `payment_intent`: the same ask gives the same
    /// key, so Stripe refunds once however often it is sent (within the 24 hours Stripe
    /// keeps keys).
    fn key(&self, payment_intent: &str) -> String {
        let mut text = format!(
            "{payment_intent}\n{:?}\n{:?}",
            self.amount,
            self.items.as_deref()
        );
        if let Some(nonce) = &self.nonce {
            text = format!("{text}\n{nonce}");
        }
        format!("fulfilld-refund-{}", hex::encode(Sha256::digest(text)))
    }
}

/// The SKUs session `outcome` bought: its grants and its shipment's items.
pub fn bought_skus(outcome: &Outcome) -> Vec<&str> {
    let grants = outcome.access.iter().map(|grant| grant.sku.as_str());
    let shipped = outcome
        .shipment
        .iter()
        .flat_map(|shipment| shipment.items.iter().map(|item| item.sku.as_str()));
    grants.chain(shipped).collect()
}

/// A refund made, and the currency to show it in.
#[derive(Debug)]
pub struct Refunded {
    pub refund: MadeRefund,
    pub currency: String,
}

/// Session `id` as recorded, to refund.
pub async fn recorded(db: &Database, id: &SessionId) -> Result<Outcome, RefundError> {
    db.outcome(id)
        .await?
        .ok_or_else(|| RefundError::NotRecorded(id.clone()))
}

/// Refunds the session of `outcome` at Stripe as `ask` says, once [`RefundAsk::check`]
/// passes.
pub async fn refund(
    db: &Database,
    stripe: &StripeGateway,
    outcome: &Outcome,
    ask: &RefundAsk,
) -> Result<Refunded, RefundError> {
    ask.check(outcome)?;
    let id = &SessionId::parse(&outcome.session_id).map_err(anyhow::Error::msg)?;
    let account = outcome
        .account
        .as_deref()
        .map(AccountId::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let stripe_failed = |error| RefundError::Stripe {
        id: id.clone(),
        error,
    };
    let payment_intent = match db.payment_intent_of(id).await? {
        Some(payment_intent) => payment_intent,
        // Recorded before payment intents were.
        None => stripe
            .checkout_session(id, account.as_ref(), &Priority::Interactive)
            .await
            .map_err(stripe_failed)?
            .0
            .payment_intent
            .ok_or_else(|| anyhow::anyhow!("Stripe names no payment intent for {id}"))?,
    };
    let refund = stripe
        .create_refund(
            &payment_intent,
            ask.amount,
            ask.items.as_deref(),
            account.as_ref(),
            &ask.key(&payment_intent),
        )
        .await
        .map_err(stripe_failed)?;
    tracing::info!(
        session.id = %id,
        refund.id = %refund.id,
        refund.amount = refund.amount,
        "an operator refunded a session"
    );
    Ok(Refunded {
        refund,
        currency: outcome.currency.clone().unwrap_or_else(|| "usd".to_owned()),
    })
}
