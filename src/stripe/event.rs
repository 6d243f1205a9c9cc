//! The few fields fulfilld reads from a webhook event.
//!
//! For a Checkout event only `id`, `type`, `livemode`, `data.object.id` and
//! `data.object.payment_status` decide anything. For refund and dispute news, the
//! refund's (or charge's, or dispute's) id, `payment_intent`, amount and status, and for
//! `charge.refunded` the event's `api_version`. A handful of optional session fields
//! (currency, total, the customer's email, the shipping address, when it was created) are
//! read leniently, as untyped JSON, so a new Stripe API version that reshapes them costs
//! those details, never the event.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{
    AccountId, DisputeStatus, NewsKind, PaymentStatus, Progress, RefundStatus, ReversalNews,
    SessionId, SessionState, SessionSummary, ShippingAddress,
};

/// The Checkout events fulfilld acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutEvent {
    Completed,
    AsyncPaymentSucceeded,
    AsyncPaymentFailed,
    Expired,
}

impl CheckoutEvent {
    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "checkout.session.completed" => Some(Self::Completed),
            "checkout.session.async_payment_succeeded" => Some(Self::AsyncPaymentSucceeded),
            "checkout.session.async_payment_failed" => Some(Self::AsyncPaymentFailed),
            "checkout.session.expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// A parsed delivery.
#[derive(Debug, Clone)]
pub enum Event {
    /// A Checkout event about one session.
    Checkout {
        id: String,
        kind: CheckoutEvent,
        type_name: String,
        summary: SessionSummary,
    },
    /// News of money given back or disputed: `refund.created`, `refund.updated`,
    /// `refund.failed`, `charge.refunded` from accounts on API versions older than
    /// 2024-10-28, and `charge.dispute.created`, `closed` and `funds_reinstated`.
    Refund {
        id: String,
        type_name: String,
        livemode: bool,
        account: Option<AccountId>,
        news: ReversalNews,
    },
    /// Any other event type, and `charge.refunded` on later API versions: acknowledged
    /// and ignored.
    Ignored { id: String, type_name: String },
}

impl Event {
    /// The event's id (`evt_…`).
    pub fn id(&self) -> &str {
        match self {
            Self::Checkout { id, .. } | Self::Refund { id, .. } | Self::Ignored { id, .. } => id,
        }
    }

    /// The event's `type`.
    pub fn type_name(&self) -> &str {
        match self {
            Self::Checkout { type_name, .. }
            | Self::Refund { type_name, .. }
            | Self::Ignored { type_name, .. } => type_name,
        }
    }
}

/// Why a body is not an event fulfilld can read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the body is not a Stripe event: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("the event's id is not a Stripe event id (evt_…)")]
    Id,
    #[error("the event's data.object.id is not a Checkout Session id: {0}")]
    SessionId(String),
    #[error("the event's data.object.payment_status is missing or unknown")]
    PaymentStatus,
    #[error("the event's account is not a Stripe account id: {0}")]
    Account(String),
    #[error("the refund or dispute news is not readable: {0}")]
    Refund(&'static str),
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    type_name: String,
    livemode: bool,
    /// Seconds since the epoch.
    #[serde(default)]
    created: i64,
    /// The API version the object is rendered in (`YYYY-MM-DD.name`); null on events
    /// older than Stripe's versioning of them.
    api_version: Option<String>,
    /// Set on events from a connected account (Stripe Connect).
    account: Option<String>,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    object: Object,
}

#[derive(Deserialize)]
struct Object {
    id: Option<String>,
    payment_status: Option<String>,
    currency: Option<Value>,
    amount_total: Option<Value>,
    customer_details: Option<Value>,
    collected_information: Option<Value>,
    shipping_details: Option<Value>,
    created: Option<Value>,
    // Refunds and charges.
    payment_intent: Option<Value>,
    amount: Option<Value>,
    amount_refunded: Option<Value>,
    status: Option<Value>,
    metadata: Option<Value>,
}

/// Parses a verified webhook body.
pub fn parse(body: &[u8]) -> Result<Event, EventError> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    // The id is the key every delivery of the event is stored and answered under.
    let plain = |rest: &str| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if envelope.id.len() > 255 || !envelope.id.strip_prefix("evt_").is_some_and(plain) {
        return Err(EventError::Id);
    }
    let account = envelope
        .account
        .as_deref()
        .map(AccountId::parse)
        .transpose()
        .map_err(EventError::Account)?;
    let Some(kind) = CheckoutEvent::parse(&envelope.type_name) else {
        return refund_news(envelope, account);
    };
    let object = envelope.data.object;
    let raw_id = object.id.unwrap_or_default();
    let id = SessionId::parse(&raw_id).map_err(EventError::SessionId)?;
    let payment_status = match (kind, object.payment_status.as_deref()) {
        (_, Some(raw)) => PaymentStatus::parse(raw).ok_or(EventError::PaymentStatus)?,
        // Older API versions omit it on these; their meaning is not in doubt.
        (CheckoutEvent::AsyncPaymentSucceeded, None) => PaymentStatus::Paid,
        (CheckoutEvent::AsyncPaymentFailed | CheckoutEvent::Expired, None) => PaymentStatus::Unpaid,
        (CheckoutEvent::Completed, None) => return Err(EventError::PaymentStatus),
    };
    let state = match kind {
        CheckoutEvent::Expired => SessionState::Expired,
        _ => SessionState::Complete,
    };
    let summary = SessionSummary {
        id,
        account,
        livemode: envelope.livemode,
        state,
        payment_status,
        currency: object.currency.and_then(|v| v.as_str().map(str::to_owned)),
        amount_total: object.amount_total.and_then(|v| v.as_i64()),
        payment_intent: object.payment_intent.as_ref().and_then(payment_intent_id),
        customer_email: object
            .customer_details
            .and_then(|v| v.get("email").and_then(Value::as_str).map(str::to_owned)),
        shipping_address: object
            .collected_information
            .as_ref()
            .and_then(|v| v.get("shipping_details"))
            .or(object.shipping_details.as_ref())
            .and_then(ShippingAddress::from_stripe)
            .map(Box::new),
        created: object.created.and_then(|v| v.as_i64()),
    };
    Ok(Event::Checkout {
        id: envelope.id,
        kind,
        type_name: envelope.type_name,
        summary,
    })
}

/// Reads refund or dispute news, or ignores the event when it is of another type, is a
/// `charge.refunded` beside refund events, or concerns a payment no Checkout Session made
/// (one with no payment intent).
fn refund_news(envelope: Envelope, account: Option<AccountId>) -> Result<Event, EventError> {
    let kind = match envelope.type_name.as_str() {
        "refund.created" | "refund.updated" | "refund.failed" => NewsKind::Refund,
        // Where refund events tell of every refund, the charge's refunded amount only
        // gets ahead of them: it counts refunds still pending, which may be canceled yet.
        "charge.refunded" if !super::sends_refund_events(envelope.api_version.as_deref()) => {
            NewsKind::Charge
        }
        "charge.dispute.created" | "charge.dispute.closed" | "charge.dispute.funds_reinstated" => {
            NewsKind::Dispute
        }
        _ => {
            return Ok(Event::Ignored {
                id: envelope.id,
                type_name: envelope.type_name,
            });
        }
    };
    let object = envelope.data.object;
    let Some(payment_intent) = object.payment_intent.as_ref().and_then(payment_intent_id) else {
        return Ok(Event::Ignored {
            id: envelope.id,
            type_name: envelope.type_name,
        });
    };
    let id = object
        .id
        .filter(|id| is_stripe_id(id))
        .ok_or(EventError::Refund("data.object.id is not a Stripe id"))?;
    let minor_units = |value: Option<Value>| value.and_then(|v| v.as_i64()).filter(|n| *n >= 0);
    let status = object.status.as_ref().and_then(Value::as_str);
    let (amount, status) = match kind {
        NewsKind::Refund => (
            minor_units(object.amount).ok_or(EventError::Refund("the amount is missing"))?,
            status
                .and_then(RefundStatus::parse)
                .map(Progress::Refund)
                .ok_or(EventError::Refund(
                    "the refund's status is missing or unknown",
                ))?,
        ),
        // The charge's whole refunded amount, which only grows.
        NewsKind::Charge => (
            minor_units(object.amount_refunded)
                .ok_or(EventError::Refund("amount_refunded is missing"))?,
            Progress::Refund(RefundStatus::Succeeded),
        ),
        NewsKind::Dispute => (
            minor_units(object.amount).ok_or(EventError::Refund("the amount is missing"))?,
            status
                .and_then(DisputeStatus::parse)
                .map(Progress::Dispute)
                .ok_or(EventError::Refund(
                    "the dispute's status is missing or unknown",
                ))?,
        ),
    };
    let items = object
        .metadata
        .as_ref()
        .and_then(|metadata| metadata.get("items"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Event::Refund {
        id: envelope.id,
        type_name: envelope.type_name,
        livemode: envelope.livemode,
        account,
        news: ReversalNews {
            id,
            kind,
            payment_intent,
            amount,
            status,
            items,
            event_created: envelope.created,
        },
    })
}

/// `payment_intent` as an id, or expanded into an object with one.
fn payment_intent_id(value: &Value) -> Option<String> {
    let id = value.as_str().or_else(|| value.get("id")?.as_str())?;
    (id.starts_with("pi_") && is_stripe_id(id)).then(|| id.to_owned())
}

/// Stripe's ids are short runs of letters, digits and underscores.
fn is_stripe_id(raw: &str) -> bool {
    (4..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, object: Value) -> Vec<u8> {
        serde_json::json!({
            "id": "evt_1", "object": "event", "type": kind, "livemode": false,
            "api_version": "2099-01-01.future", "data": { "object": object }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_completed_event_yields_its_session_and_payment_status() {
        let mut object: Value =
            serde_json::from_str(include_str!("../sandbox/fixtures/checkout.session.json"))
                .unwrap();
        object["payment_status"] = "paid".into();
        object["amount_total"] = 2500.into();
        object["currency"] = "usd".into();
        let Event::Checkout { kind, summary, .. } =
            parse(&event("checkout.session.completed", object)).unwrap()
        else {
            panic!("not a checkout event");
        };
        assert_eq!(kind, CheckoutEvent::Completed);
        assert_eq!(summary.payment_status, PaymentStatus::Paid);
        assert_eq!(summary.amount_total, Some(2500));
        assert_eq!(
            summary.customer_email.as_deref(),
            Some("example@example.com")
        );
    }

    #[test]
    fn reshaped_optional_fields_do_not_break_parsing() {
        let object = serde_json::json!({
            "id": "cs_test_1", "payment_status": "paid",
            "amount_total": {"value": 1}, "currency": 5, "customer_details": "hidden"
        });
        let Event::Checkout { summary, .. } =
            parse(&event("checkout.session.completed", object)).unwrap()
        else {
            panic!("not a checkout event");
        };
        assert_eq!((summary.amount_total, summary.currency), (None, None));
    }

    #[test]
    fn other_event_types_are_ignored_and_bad_ids_refused() {
        let ignored = parse(&event("charge.refunded", serde_json::json!({"id": "ch_1"})));
        assert!(matches!(ignored, Ok(Event::Ignored { .. })));
        let bad = parse(&event(
            "checkout.session.completed",
            serde_json::json!({"id": "pi_1"}),
        ));
        assert!(matches!(bad, Err(EventError::SessionId(_))));
        assert!(matches!(parse(b"not json"), Err(EventError::Shape(_))));
    }

    #[test]
    fn a_charge_refunded_is_news_only_on_api_versions_without_refund_events() {
        let charge =
            serde_json::json!({"id": "ch_1", "payment_intent": "pi_1", "amount_refunded": 500});
        let mut body: Value = serde_json::from_slice(&event("charge.refunded", charge)).unwrap();
        for (version, news) in [("2024-10-28.acacia", false), ("2024-09-30.acacia", true)] {
            body["api_version"] = version.into();
            let parsed = parse(body.to_string().as_bytes()).unwrap();
            assert_eq!(matches!(parsed, Event::Refund { .. }), news, "{version}");
        }
    }

    #[test]
    fn a_connected_accounts_event_names_its_account() {
        let object = serde_json::json!({"id": "cs_test_1", "payment_status": "paid"});
        let mut body: Value =
            serde_json::from_slice(&event("checkout.session.completed", object)).unwrap();
        let Event::Checkout { summary, .. } = parse(body.to_string().as_bytes()).unwrap() else {
            panic!("not a checkout event");
        };
        assert_eq!(summary.account, None);
        body["account"] = "acct_1Connected".into();
        let Event::Checkout { summary, .. } = parse(body.to_string().as_bytes()).unwrap() else {
            panic!("not a checkout event");
        };
        assert_eq!(summary.account.unwrap().as_str(), "acct_1Connected");
        body["account"] = "acct_1 <b>".into();
        assert!(matches!(
            parse(body.to_string().as_bytes()),
            Err(EventError::Account(_))
        ));
    }
}
