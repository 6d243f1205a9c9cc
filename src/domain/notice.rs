//! What fulfilld tells the merchant's systems: the JSON bodies POSTed to
//! `SHIPPING_WEBHOOK_URL` and `ACCESS_WEBHOOK_URL`, as `/api/openapi.json` describes
//! them under `webhooks`.
//!
//! Their fields are in alphabetical order, the order these bodies have always had on the
//! wire; a shipment's address and items are in the order the JSON outcome shows them.

use serde::Serialize;
use utoipa::ToSchema;

use super::{ShipmentItem, ShippingAddress};

/// What a notice to `ACCESS_WEBHOOK_URL` tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum AccessChange {
    /// The session was fulfilled: its digital goods may be downloaded.
    #[serde(rename = "access.granted")]
    Granted,
    /// A refund took the access back for good.
    #[serde(rename = "access.revoked")]
    Revoked,
    /// A dispute of the payment was opened: no access until it is decided.
    #[serde(rename = "access.suspended")]
    Suspended,
    /// The dispute was won: access is given back.
    #[serde(rename = "access.restored")]
    Restored,
}

impl AccessChange {
    /// The notice's `type`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Granted => "access.granted",
            Self::Revoked => "access.revoked",
            Self::Suspended => "access.suspended",
            Self::Restored => "access.restored",
        }
    }

    /// The notice's `subject` and JSON body, for the grants of `skus`. A session is
    /// granted access once; every other change is told of once per transaction that made
    /// it (`now`, in milliseconds, with the SKUs it changed), so a second dispute is a
    /// second notice.
    pub fn notice(
        self,
        session_id: &str,
        skus: &[String],
        customer_email: Option<&str>,
        now: i64,
    ) -> serde_json::Result<(String, String)> {
        let subject = match self {
            Self::Granted => "granted".to_owned(),
            _ => format!("{}:{now}:{}", self.event_type(), skus.join(",")),
        };
        let notice = AccessNotice {
            customer_email: customer_email.map(str::to_owned),
            items: skus
                .iter()
                .map(|sku| AccessItem { sku: sku.clone() })
                .collect(),
            occurred_at: now,
            session_id: session_id.to_owned(),
            change: self,
        };
        Ok((subject, to_json(&notice)?))
    }
}

/// The body POSTed to `ACCESS_WEBHOOK_URL` when grants are given, taken back, suspended
/// or restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AccessNotice {
    /// The customer's email address, when Checkout collected one.
    #[schema(required = true)]
    pub customer_email: Option<String>,
    /// The grants this notice is about.
    pub items: Vec<AccessItem>,
    /// When the change was recorded, in milliseconds since the Unix epoch. A session's
    /// notices go in order, but an operator may retry a dead one late: the receiver keeps
    /// the newest per grant.
    pub occurred_at: i64,
    pub session_id: String,
    #[serde(rename = "type")]
    pub change: AccessChange,
}

/// One grant an access notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AccessItem {
    /// The digital product's SKU, from the catalog.
    pub sku: String,
}

/// What a notice to `SHIPPING_WEBHOOK_URL` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum ShipmentRequest {
    /// Ship these goods to this address.
    #[serde(rename = "shipment.requested")]
    Requested,
    /// The order was refunded in full, or a refund named these items of it: do not ship
    /// them, if they have not left yet.
    #[serde(rename = "shipment.cancel_requested")]
    CancelRequested,
}

/// The body POSTed to `SHIPPING_WEBHOOK_URL`: a shipment to make, or to cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ShipmentNotice {
    /// Where the goods go, as the customer gave it to Checkout.
    #[schema(required = true)]
    pub address: Option<ShippingAddress>,
    pub items: Vec<ShipmentItem>,
    /// False for a test-mode order, for which nothing was paid.
    pub livemode: bool,
    pub session_id: String,
    #[serde(rename = "type")]
    pub request: ShipmentRequest,
}

impl ShipmentNotice {
    /// The body as it is sent.
    pub fn to_json(&self) -> serde_json::Result<String> {
        to_json(self)
    }
}

/// A notice's JSON, its keys in alphabetical order at every level: the bytes a retry
/// sends under the same `webhook-id` stay the same whatever order the fields are
/// declared in.
fn to_json(notice: &impl Serialize) -> serde_json::Result<String> {
    Ok(serde_json::to_value(notice)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ShipmentItem, ShippingAddress};

    #[test]
    fn a_shipment_notice_is_written_with_its_keys_in_order_at_every_level() {
        let notice = ShipmentNotice {
            address: Some(ShippingAddress {
                name: "Ada".into(),
                line1: Some("1 Main St".into()),
                line2: None,
                city: Some("Springfield".into()),
                state: None,
                postal_code: Some("12345".into()),
                country: Some("US".into()),
            }),
            items: vec![ShipmentItem {
                sku: "MUG".into(),
                name: "Enamel mug".into(),
                quantity: 2,
            }],
            livemode: false,
            session_id: "cs_test_a".into(),
            request: ShipmentRequest::Requested,
        };
        assert_eq!(
            notice.to_json().unwrap(),
            concat!(
                r#"{"address":{"city":"Springfield","country":"US","line1":"1 Main St","#,
                r#""line2":null,"name":"Ada","postal_code":"12345","state":null},"#,
                r#""items":[{"name":"Enamel mug","quantity":2,"sku":"MUG"}],"#,
                r#""livemode":false,"session_id":"cs_test_a","type":"shipment.requested"}"#
            )
        );
    }
}
