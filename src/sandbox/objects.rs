//! Stripe-shaped JSON objects, derived from the fixtures Stripe publishes with its OpenAPI
//! specification (`fixtures/`, MIT licence).

use serde_json::{Value, json};

const SESSION_FIXTURE: &str = include_str!("fixtures/checkout.session.json");
const ITEM_FIXTURE: &str = include_str!("fixtures/item.json");

/// Items Stripe embeds when a retrieve expands `line_items`.
pub const EMBEDDED_ITEMS: usize = 10;

/// One line of a simulated cart.
#[derive(Debug, Clone)]
pub struct ItemSpec {
    pub description: String,
    pub price_id: String,
    pub unit_amount: i64,
    pub quantity: u64,
}

impl ItemSpec {
    /// Unit amount times quantity, in minor units.
    pub fn amount_total(&self) -> i64 {
        self.unit_amount * i64::try_from(self.quantity).unwrap_or(i64::MAX)
    }
}

fn fixture(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|e| unreachable!("bundled fixture is valid JSON: {e}"))
}

/// A line item (`"object": "item"`) of session `session_id`, `index` counting from 0.
pub fn line_item(session_id: &str, index: usize, item: &ItemSpec, currency: &str) -> Value {
    let mut value = fixture(ITEM_FIXTURE);
    let total = item.amount_total();
    let suffix: String = session_id.chars().rev().take(8).collect();
    value["id"] = json!(format!("li_{suffix}{index:05}"));
    value["description"] = json!(item.description);
    value["quantity"] = json!(item.quantity);
    value["currency"] = json!(currency);
    value["amount_subtotal"] = json!(total);
    value["amount_total"] = json!(total);
    let price = &mut value["price"];
    price["id"] = json!(item.price_id);
    price["product"] = json!(format!(
        "prod_{}",
        item.price_id.trim_start_matches("price_")
    ));
    price["currency"] = json!(currency);
    price["unit_amount"] = json!(item.unit_amount);
    price["unit_amount_decimal"] = json!(item.unit_amount.to_string());
    price["recurring"] = Value::Null;
    price["type"] = json!("one_time");
    value
}

/// A Checkout Session object without line items.
pub fn checkout_session(
    id: &str,
    status: &str,
    payment_status: &str,
    currency: &str,
    amount_total: i64,
    email: Option<&str>,
) -> Value {
    let mut value = fixture(SESSION_FIXTURE);
    value["id"] = json!(id);
    value["status"] = json!(status);
    value["payment_status"] = json!(payment_status);
    value["currency"] = json!(currency);
    value["amount_subtotal"] = json!(amount_total);
    value["amount_total"] = json!(amount_total);
    value["customer_details"]["email"] = json!(email);
    value["livemode"] = json!(id.starts_with("cs_live_"));
    value["shipping_cost"] = Value::Null;
    value["total_details"] = json!({"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0});
    value["url"] = json!(format!("https://checkout.stripe.com/c/pay/{id}"));
    value
}

/// A list object, as Stripe pages them.
pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "url": url, "has_more": has_more, "data": data })
}

/// A Stripe error body.
pub fn error(kind: &str, code: Option<&str>, message: &str) -> Value {
    json!({ "error": { "type": kind, "code": code, "message": message } })
}

/// A webhook event carrying `object` as `data.object`.
pub fn event(id: &str, event_type: &str, object: Value, created: i64) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": created,
        "livemode": object["livemode"].as_bool().unwrap_or(false),
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
        "data": { "object": object },
    })
}

/// The payment intent a completed session `id` paid through: one per session.
pub fn payment_intent_of(id: &str) -> String {
    let suffix = id
        .trim_start_matches("cs_test_")
        .trim_start_matches("cs_live_");
    format!("pi_{suffix}")
}

/// A Refund object (`"object": "refund"`), shaped as Stripe's API reference shows it.
/// `items`, when given, goes in `metadata.items`.
pub fn refund(
    id: &str,
    payment_intent: &str,
    amount: i64,
    currency: &str,
    status: &str,
    items: Option<&str>,
    created: i64,
) -> Value {
    let metadata = match items {
        Some(items) => json!({ "items": items }),
        None => json!({}),
    };
    json!({
        "id": id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": null,
        "charge": format!("ch_{}", payment_intent.trim_start_matches("pi_")),
        "created": created,
        "currency": currency,
        "destination_details": null,
        "failure_reason": if status == "failed" { json!("expired_or_canceled_card") } else { Value::Null },
        "metadata": metadata,
        "payment_intent": payment_intent,
        "reason": "requested_by_customer",
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": status,
        "transfer_reversal": null,
    })
}

/// A Dispute object (`"object": "dispute"`), shaped as Stripe's API reference shows it.
pub fn dispute(
    id: &str,
    payment_intent: &str,
    amount: i64,
    currency: &str,
    status: &str,
    created: i64,
) -> Value {
    json!({
        "id": id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": format!("ch_{}", payment_intent.trim_start_matches("pi_")),
        "created": created,
        "currency": currency,
        "evidence": {},
        "evidence_details": {
            "due_by": created + 7 * 86_400,
            "has_evidence": false,
            "past_due": false,
            "submission_count": 0
        },
        "is_charge_refundable": false,
        "livemode": false,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": "fraudulent",
        "status": status,
    })
}

/// A Charge object (`"object": "charge"`) with `amount_refunded` refunded so far, as a
/// `charge.refunded` event carries it.
pub fn refunded_charge(
    payment_intent: &str,
    amount: i64,
    amount_refunded: i64,
    currency: &str,
    created: i64,
) -> Value {
    json!({
        "id": format!("ch_{}", payment_intent.trim_start_matches("pi_")),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "captured": true,
        "created": created,
        "currency": currency,
        "livemode": false,
        "metadata": {},
        "paid": true,
        "payment_intent": payment_intent,
        "refunded": amount_refunded >= amount,
        "status": "succeeded",
    })
}

/// `shipping_details` as Checkout collects it.
pub fn shipping_details(
    name: &str,
    line1: &str,
    city: &str,
    postal_code: &str,
    country: &str,
) -> Value {
    json!({
        "name": name,
        "address": {
            "line1": line1, "line2": null, "city": city, "state": null,
            "postal_code": postal_code, "country": country
        }
    })
}
