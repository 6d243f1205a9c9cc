use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    AccessGrant, AccountId, GrantStatus, SessionId, Shipment, ShipmentStatus, ShippingAddress,
};

/// What fulfilld has made of a Checkout Session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Paid (or free) and fulfilled: recorded exactly once.
    Fulfilled,
    /// Complete but paid by a delayed method that has not cleared yet.
    AwaitingPayment,
    /// The delayed payment failed; nothing was fulfilled.
    PaymentFailed,
    /// The session expired before it was paid.
    Expired,
    /// Fulfilled, then refunded in full: digital access is taken back.
    Refunded,
    /// Fulfilled, then refunded in part; `amount_refunded` says how much.
    PartiallyRefunded,
    /// Fulfilled, and a dispute of the payment is open: digital access is suspended and a
    /// shipment not sent yet is held until it is decided.
    Disputed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fulfilled => "fulfilled",
            Self::AwaitingPayment => "awaiting_payment",
            Self::PaymentFailed => "payment_failed",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Disputed => "disputed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Fulfilled,
            Self::AwaitingPayment,
            Self::PaymentFailed,
            Self::Expired,
            Self::Refunded,
            Self::PartiallyRefunded,
            Self::Disputed,
        ]
        .into_iter()
        .find(|status| status.as_str() == raw)
    }

    /// A terminal status is never fulfilled again: the session's fulfilment is settled.
    /// Only refunds and disputes change it later.
    pub fn is_terminal(self) -> bool {
        self != Self::AwaitingPayment
    }

    /// Whether the session was fulfilled, whatever was refunded or disputed since.
    pub fn was_fulfilled(self) -> bool {
        matches!(
            self,
            Self::Fulfilled | Self::Refunded | Self::PartiallyRefunded | Self::Disputed
        )
    }
}

/// `payment_status` of a Checkout Session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Paid,
    Unpaid,
    NoPaymentRequired,
}

impl PaymentStatus {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "paid" => Some(Self::Paid),
            "unpaid" => Some(Self::Unpaid),
            "no_payment_required" => Some(Self::NoPaymentRequired),
            _ => None,
        }
    }
}

/// `status` of a Checkout Session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Open,
    Complete,
    Expired,
}

/// What fulfilld knows about a session apart from its line items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub id: SessionId,
    /// The connected account the session belongs to (Stripe Connect); `None` for the
    /// platform's own sessions.
    pub account: Option<AccountId>,
    pub livemode: bool,
    pub state: SessionState,
    pub payment_status: PaymentStatus,
    pub currency: Option<String>,
    pub amount_total: Option<i64>,
    /// Where receipts go. Never logged.
    pub customer_email: Option<String>,
    /// The payment intent that took the money (`pi_…`): what refunds name.
    pub payment_intent: Option<String>,
    /// `collected_information.shipping_details`, or `shipping_details` on older API
    /// versions; boxed to keep summaries small in messages. Never logged.
    pub shipping_address: Option<Box<ShippingAddress>>,
    /// When Stripe created the session, in seconds since the epoch, if told.
    pub created: Option<i64>,
}

/// One line of the cart, as Stripe listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LineItem {
    pub id: String,
    #[schema(required = true)]
    pub price_id: Option<String>,
    #[schema(required = true)]
    pub product_id: Option<String>,
    pub description: String,
    pub quantity: i64,
    pub currency: String,
    #[schema(required = true)]
    pub unit_amount: Option<i64>,
    pub amount_subtotal: i64,
    pub amount_total: i64,
}

/// The answer to every request about a session: its status and what was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Outcome {
    pub session_id: String,
    /// The connected account (`acct_…`) the session belongs to, for a Connect platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub status: Status,
    pub livemode: bool,
    #[schema(required = true)]
    pub currency: Option<String>,
    /// The session's total, in minor units.
    #[schema(required = true)]
    pub amount_total: Option<i64>,
    /// What refunds have given back so far, in minor units.
    pub amount_refunded: i64,
    /// Milliseconds since the Unix epoch; null for a session recorded without being
    /// fulfilled, as it was fulfilled before fulfilld knew of it.
    #[schema(required = true)]
    pub fulfilled_at: Option<i64>,
    pub line_items: Vec<LineItem>,
    /// Links to the digital goods bought, once fulfilled.
    pub access: Vec<AccessGrant>,
    /// The physical goods bought and where they stand, once fulfilled.
    #[schema(required = true)]
    pub shipment: Option<Shipment>,
}

/// One line of an order as a customer reads it: what, how many, how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLine {
    pub description: String,
    pub quantity: i64,
    pub amount: String,
}

impl Outcome {
    /// The grants that still give access: what pages and emails link to.
    pub fn active_access(&self) -> impl Iterator<Item = &AccessGrant> {
        self.access
            .iter()
            .filter(|grant| grant.status == GrantStatus::Active)
    }

    /// True when nothing shown about the session changes any more but by a refund: its
    /// status is terminal and its shipment, if any, has left fulfilld's hands.
    pub fn is_final(&self) -> bool {
        self.status.is_terminal()
            && self.shipment.as_ref().is_none_or(|shipment| {
                matches!(
                    shipment.status,
                    ShipmentStatus::Submitted
                        | ShipmentStatus::AwaitingManualHandling
                        | ShipmentStatus::Cancelled
                )
            })
    }

    /// The cart as lines for a page, an email or the command line, each amount written by
    /// `write` from minor units and currency: [`format_money`](super::format_money) for
    /// people, [`format_amount`](super::format_amount) for the command line.
    pub fn item_lines(&self, write: impl Fn(i64, &str) -> String) -> Vec<ItemLine> {
        self.line_items
            .iter()
            .map(|item| ItemLine {
                description: item.description.clone(),
                quantity: item.quantity,
                amount: write(item.amount_total, &item.currency),
            })
            .collect()
    }

    /// The session's total, written by `write`, when Stripe gave it and its currency.
    pub fn formatted_total(&self, write: impl Fn(i64, &str) -> String) -> Option<String> {
        self.amount_total
            .zip(self.currency.as_deref())
            .map(|(amount, currency)| write(amount, currency))
    }

    /// What refunds gave back, written by `write`, once anything was.
    pub fn formatted_refunded(&self, write: impl Fn(i64, &str) -> String) -> Option<String> {
        let currency = self.currency.as_deref()?;
        (self.amount_refunded > 0).then(|| write(self.amount_refunded, currency))
    }
}
