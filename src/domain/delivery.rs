//! What a fulfilled session delivers: access to digital goods, a shipment of physical ones.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Access to a digital product, granted once per (session, SKU).
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct AccessGrant {
    pub sku: String,
    pub name: String,
    /// The download link, while the grant is active.
    #[schema(required = false)]
    pub url: String,
    pub status: GrantStatus,
}

/// A revoked grant is shown without its link: the link is what a refund took back.
impl Serialize for AccessGrant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut grant = serializer.serialize_struct("AccessGrant", 4)?;
        grant.serialize_field("sku", &self.sku)?;
        grant.serialize_field("name", &self.name)?;
        match self.status {
            GrantStatus::Active => grant.serialize_field("url", &self.url)?,
            GrantStatus::Suspended | GrantStatus::Revoked => grant.skip_field("url")?,
        }
        grant.serialize_field("status", &self.status)?;
        grant.end()
    }
}

/// Whether a grant still gives access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Active,
    /// Held back while a dispute of the payment is open; active again if it is won.
    Suspended,
    /// Taken back by a refund; its link is shown nowhere any more.
    Revoked,
}

impl GrantStatus {
    /// The status of a grant stored with these times (`revoked_at`, `suspended_at`): a
    /// revocation outlasts any suspension.
    pub fn of(revoked_at: Option<i64>, suspended_at: Option<i64>) -> Self {
        match (revoked_at, suspended_at) {
            (Some(_), _) => Self::Revoked,
            (None, Some(_)) => Self::Suspended,
            (None, None) => Self::Active,
        }
    }
}

/// Where physical goods go, as the customer gave it to Checkout. Never logged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShippingAddress {
    pub name: String,
    #[schema(required = true)]
    pub line1: Option<String>,
    #[schema(required = true)]
    pub line2: Option<String>,
    #[schema(required = true)]
    pub city: Option<String>,
    #[schema(required = true)]
    pub state: Option<String>,
    #[schema(required = true)]
    pub postal_code: Option<String>,
    /// Two-letter ISO country code.
    #[schema(required = true)]
    pub country: Option<String>,
}

impl ShippingAddress {
    /// Reads Stripe's `{name, address: {line1, …}}` shape, leniently: a missing name or a
    /// reshaped object yields `None` rather than an error.
    pub fn from_stripe(details: &Value) -> Option<Self> {
        let name = details.get("name")?.as_str()?.to_owned();
        let address = details.get("address");
        let field = |key: &str| {
            address
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(Self {
            name,
            line1: field("line1"),
            line2: field("line2"),
            city: field("city"),
            state: field("state"),
            postal_code: field("postal_code"),
            country: field("country"),
        })
    }

    /// The address as lines for a label, a page or an email, without empty parts.
    pub fn lines(&self) -> Vec<String> {
        let locality = [&self.postal_code, &self.city, &self.state]
            .into_iter()
            .flatten()
            .filter(|part| !part.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        [
            Some(self.name.clone()),
            self.line1.clone(),
            self.line2.clone(),
        ]
        .into_iter()
        .flatten()
        .chain([locality, self.country.clone().unwrap_or_default()])
        .filter(|line| !line.trim().is_empty())
        .collect()
    }
}

/// Where a shipment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// Recorded; the warehouse has not been told yet.
    Pending,
    /// The warehouse accepted it.
    Submitted,
    /// No `SHIPPING_WEBHOOK_URL`: an operator ships it by hand.
    AwaitingManualHandling,
    /// The warehouse refused it; an operator must look (`fulfilld effects list`).
    Failed,
    /// The order was refunded in full before the warehouse was told, or the warehouse
    /// accepted the request to cancel it.
    Cancelled,
    /// A dispute of the payment is open: the warehouse is not told until it is won.
    Held,
}

impl ShipmentStatus {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Submitted,
        Self::AwaitingManualHandling,
        Self::Failed,
        Self::Cancelled,
        Self::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted => "submitted",
            Self::AwaitingManualHandling => "awaiting_manual_handling",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Held => "held",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Submitted,
            Self::AwaitingManualHandling,
            Self::Failed,
            Self::Cancelled,
            Self::Held,
        ]
        .into_iter()
        .find(|status| status.as_str() == raw)
    }
}

/// A side effect of a recorded status, carried out after the transaction by the actor for
/// its kind. At most one of each kind per session, but for notices, one per `subject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum EffectKind {
    /// The receipt email for a fulfilled session.
    Receipt,
    /// The notice that a delayed payment failed.
    PaymentFailedEmail,
    /// The session's stock movements.
    Inventory,
    /// The request to the warehouse.
    Shipment,
    /// The email telling the customer their order was refunded in full.
    RefundEmail,
    /// The request to the warehouse to cancel a shipment it was asked for.
    ShipmentCancel,
    /// A notice to `ACCESS_WEBHOOK_URL` that grants were given, taken back, suspended or
    /// restored.
    AccessNotice,
}

impl EffectKind {
    pub const ALL: [Self; 7] = [
        Self::Receipt,
        Self::PaymentFailedEmail,
        Self::Inventory,
        Self::Shipment,
        Self::RefundEmail,
        Self::ShipmentCancel,
        Self::AccessNotice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receipt => "receipt",
            Self::PaymentFailedEmail => "payment_failed_email",
            Self::Inventory => "inventory",
            Self::Shipment => "shipment",
            Self::RefundEmail => "refund_email",
            Self::ShipmentCancel => "shipment_cancel",
            Self::AccessNotice => "access_notice",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }
}

/// Where an effect stands in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum EffectStatus {
    /// To be attempted when due, by whichever process claims it.
    Pending,
    /// Carried out.
    Done,
    /// Given up on after its attempts ran out or a permanent failure; an operator retries it.
    Dead,
    /// Never carried out: the order was refunded in full before it was.
    Cancelled,
    /// Not carried out while a dispute is open; pending again if it is won.
    Held,
}

impl EffectStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Held => "held",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Done,
            Self::Dead,
            Self::Cancelled,
            Self::Held,
        ]
        .into_iter()
        .find(|status| status.as_str() == raw)
    }
}

impl std::fmt::Display for EffectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for EffectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is told of what happens to an order, besides the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tell {
    /// The customer, by email (`SEND_RECEIPTS`).
    pub customer: bool,
    /// The merchant's access system (`ACCESS_WEBHOOK_URL`).
    pub access: bool,
    /// The warehouse (`SHIPPING_WEBHOOK_URL`).
    pub warehouse: bool,
}

/// One line of a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShipmentItem {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
}

/// The physical part of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Shipment {
    pub status: ShipmentStatus,
    #[schema(required = true)]
    pub address: Option<ShippingAddress>,
    pub items: Vec<ShipmentItem>,
}

impl Shipment {
    /// Takes `units` (SKU, quantity) off the shipment's items: a line with none left goes.
    pub fn leave_out(&mut self, units: &[(String, i64)]) {
        for item in &mut self.items {
            let named: i64 = units
                .iter()
                .filter(|(sku, _)| *sku == item.sku)
                .map(|(_, quantity)| quantity)
                .sum();
            item.quantity -= named;
        }
        self.items.retain(|item| item.quantity > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_shipping_details_become_address_lines() {
        let details = serde_json::json!({
            "name": "Jenny Rosen",
            "address": {"line1": "1 Main St", "line2": null, "city": "Springfield",
                        "state": "OR", "postal_code": "97477", "country": "US"}
        });
        let address = ShippingAddress::from_stripe(&details).unwrap();
        assert_eq!(
            address.lines(),
            ["Jenny Rosen", "1 Main St", "97477 Springfield OR", "US"]
        );
        assert_eq!(
            ShippingAddress::from_stripe(&serde_json::json!("hidden")),
            None
        );
    }
}
