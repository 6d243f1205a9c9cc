//! Creating Checkout Sessions (the storefront) and refunds (operators), and listing what
//! Stripe knows (reconcile, refunds).

use serde::Serialize;
use serde_json::Value;
use std::str::FromStr;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionShippingAddressCollection,
    CreateCheckoutSessionShippingAddressCollectionAllowedCountries,
};
use stripe_client_core::{
    IdempotencyKey, RequestBuilder, RequestStrategy, StripeMethod, StripeRequest,
};

use stripe_shared::{CheckoutSessionMode, CheckoutSessionUiMode};

use super::gateway::on_account;
use super::{GatewayError, Priority, StripeGateway};
use crate::domain::{AccountId, SessionId};

/// Countries the storefront ships to.
const SHIPPING_COUNTRIES: [&str; 10] = ["US", "CA", "GB", "IE", "DE", "FR", "NL", "ES", "IT", "AU"];

/// A Checkout Session to create.
#[derive(Debug)]
pub struct NewCheckout {
    /// (Stripe Price id, quantity)
    pub items: Vec<(String, u64)>,
    pub collect_shipping: bool,
    pub success_url: String,
    pub cancel_url: String,
    /// When Stripe expires the session, in seconds since the epoch (30 minutes to 24
    /// hours away); Stripe's default of 24 hours when `None`.
    pub expires_at: Option<i64>,
    /// fulfilld's id of the stock held for the session, kept in its metadata as
    /// `fulfilld_reservation`.
    pub reservation: Option<String>,
    /// Filled in on the payment page.
    pub customer_email: Option<String>,
    /// Stripe's embedded form instead of its hosted page: the session then returns the
    /// customer to `success_url` (as its `return_url`) and has no `cancel_url`.
    pub embedded: bool,
}

/// `ui_mode`'s value at Stripe API `version`: `2026-03-25.dahlia` renamed `hosted` and
/// `embedded` to `hosted_page` and `embedded_page`.
pub fn ui_mode(embedded: bool, version: &str) -> &'static str {
    let renamed = version.get(..10).is_some_and(|date| date >= "2026-03-25");
    match (embedded, renamed) {
        (true, true) => "embedded_page",
        (true, false) => "embedded",
        (false, true) => "hosted_page",
        (false, false) => "hosted",
    }
}

/// A Checkout Session Stripe created.
#[derive(Debug, Clone)]
pub struct CreatedCheckout {
    pub id: String,
    /// Where to send the customer: hosted sessions.
    pub url: Option<String>,
    /// What Stripe.js mounts the form with: embedded sessions.
    pub client_secret: Option<String>,
    /// When Stripe expires it, in seconds since the epoch.
    pub expires_at: i64,
}

/// One page of a Stripe list.
#[derive(Debug)]
pub struct Page {
    pub data: Vec<Value>,
    pub has_more: bool,
}

impl Page {
    /// The `starting_after` of the next page, if there is one.
    pub fn next_cursor(&self) -> Option<String> {
        if !self.has_more {
            return None;
        }
        self.data
            .last()
            .and_then(|object| object["id"].as_str())
            .map(str::to_owned)
    }
}

/// A `created` range filter.
#[derive(Debug, Serialize)]
pub struct Created {
    pub gte: i64,
}

/// `GET /v1/events` parameters.
#[derive(Debug, Serialize)]
pub struct EventsQuery<'a> {
    pub types: &'a [&'a str],
    pub created: Created,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_success: Option<bool>,
    pub limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starting_after: Option<String>,
}

/// `GET /v1/checkout/sessions` parameters.
#[derive(Debug, Serialize)]
pub struct SessionsQuery<'a> {
    pub status: &'a str,
    pub created: Created,
    pub limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starting_after: Option<String>,
}

/// `GET /v1/checkout/sessions?payment_intent=…` parameters.
#[derive(Debug, Serialize)]
struct ByPaymentIntent<'a> {
    payment_intent: &'a str,
    limit: u32,
}

/// `POST /v1/refunds` parameters.
#[derive(Debug, Serialize)]
struct NewRefund<'a> {
    payment_intent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<RefundMetadata<'a>>,
}

#[derive(Debug, Serialize)]
struct RefundMetadata<'a> {
    items: &'a str,
}

/// A refund Stripe made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeRefund {
    pub id: String,
    /// Minor units.
    pub amount: i64,
    pub status: String,
}

impl StripeGateway {
    /// Refunds `amount` (the rest of the payment when `None`) of `payment_intent`, naming
    /// `items` in its metadata, on the connected account if there is one. Every attempt
    /// carries `key`, so Stripe refunds once however often the request is sent; what the
    /// refund reverses follows from Stripe's webhooks.
    pub async fn create_refund(
        &self,
        payment_intent: &str,
        amount: Option<i64>,
        items: Option<&str>,
        account: Option<&AccountId>,
        key: &str,
    ) -> Result<MadeRefund, GatewayError> {
        let key = IdempotencyKey::new(key)
            .map_err(|e| GatewayError::Unavailable(format!("idempotency key: {e}")))?;
        let form = NewRefund {
            payment_intent,
            amount,
            metadata: items.map(|items| RefundMetadata { items }),
        };
        let raw = self
            .call_with(&Priority::Interactive, 3, || {
                let request = RequestBuilder::new(StripeMethod::Post, "/refunds")
                    .form(&form)
                    .customize::<miniserde::json::Value>()
                    .request_strategy(RequestStrategy::Idempotent(key.clone()));
                on_account(request, account).send(&self.client)
            })
            .await?;
        let value: Value =
            serde_json::from_str(&miniserde::json::to_string(&raw)).map_err(|e| {
                GatewayError::Unavailable(format!("unreadable refund from Stripe: {e}"))
            })?;
        match (
            value["id"].as_str(),
            value["amount"].as_i64(),
            value["status"].as_str(),
        ) {
            (Some(id), Some(amount), Some(status)) => Ok(MadeRefund {
                id: id.to_owned(),
                amount,
                status: status.to_owned(),
            }),
            _ => Err(GatewayError::Unavailable(
                "Stripe answered a refund without its id, amount or status".into(),
            )),
        }
    }

    /// The Checkout Session that made `payment_intent`, on the connected account if there
    /// is one; `None` when no session did (a payment taken some other way).
    pub async fn session_of_payment_intent(
        &self,
        payment_intent: &str,
        account: Option<&AccountId>,
    ) -> Result<Option<SessionId>, GatewayError> {
        let query = ByPaymentIntent {
            payment_intent,
            limit: 1,
        };
        let raw = self
            .call(&Priority::Background, || {
                let request = RequestBuilder::new(StripeMethod::Get, "/checkout/sessions")
                    .query(&query)
                    .customize::<miniserde::json::Value>();
                on_account(request, account).send(&self.client)
            })
            .await?;
        let value: Value = serde_json::from_str(&miniserde::json::to_string(&raw))
            .map_err(|e| GatewayError::Unavailable(format!("unreadable list from Stripe: {e}")))?;
        value["data"][0]["id"]
            .as_str()
            .map(|id| {
                SessionId::parse(id).map_err(|e| {
                    GatewayError::Unavailable(format!("Stripe listed a malformed session id: {e}"))
                })
            })
            .transpose()
    }

    /// Creates a Checkout Session in payment mode. Sent again only with the same
    /// idempotency key, so Stripe creates one session however often it arrives.
    pub async fn create_checkout_session(
        &self,
        new: &NewCheckout,
    ) -> Result<CreatedCheckout, GatewayError> {
        let items: Vec<_> = new
            .items
            .iter()
            .map(|(price, quantity)| {
                let mut item = CreateCheckoutSessionLineItems::new();
                item.price = Some(price.clone());
                item.quantity = Some(*quantity);
                item
            })
            .collect();
        let mut request = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .line_items(items);
        request = match new.embedded {
            true => {
                let mode = ui_mode(true, super::pinned_api_version());
                request
                    .ui_mode(CheckoutSessionUiMode::from_str(mode).unwrap_or_else(|e| match e {}))
                    .return_url(new.success_url.clone())
            }
            false => request
                .success_url(new.success_url.clone())
                .cancel_url(new.cancel_url.clone()),
        };
        if let Some(expires_at) = new.expires_at {
            request = request.expires_at(expires_at);
        }
        if let Some(email) = &new.customer_email {
            request = request.customer_email(email.clone());
        }
        if let Some(reservation) = &new.reservation {
            request = request.metadata([("fulfilld_reservation".to_owned(), reservation.clone())]);
        }
        if new.collect_shipping {
            let countries: Vec<_> = SHIPPING_COUNTRIES
                .iter()
                .filter_map(|code| {
                    code.parse::<CreateCheckoutSessionShippingAddressCollectionAllowedCountries>()
                        .ok()
                })
                .collect();
            request = request.shipping_address_collection(
                CreateCheckoutSessionShippingAddressCollection::new(countries),
            );
        }
        // One key for every attempt: Stripe creates the session once, however often the
        // request arrives, so a request whose answer was lost may be sent again.
        let key = IdempotencyKey::new(format!("fulfilld-checkout-{:032x}", fastrand::u128(..)))
            .map_err(|e| GatewayError::Unavailable(format!("idempotency key: {e}")))?;
        let session = self
            .call_with(&Priority::Interactive, 2, || {
                request
                    .customize()
                    .request_strategy(RequestStrategy::Idempotent(key.clone()))
                    .send(&self.client)
            })
            .await?;
        let created = CreatedCheckout {
            id: session.id.to_string(),
            url: session.url,
            client_secret: session.client_secret,
            expires_at: session.expires_at,
        };
        match (new.embedded, &created.url, &created.client_secret) {
            (false, Some(_), _) | (true, _, Some(_)) => Ok(created),
            _ => Err(GatewayError::Unavailable(
                "Stripe created a session without its URL or client secret".into(),
            )),
        }
    }

    /// One page of a list endpoint (`/events`, `/checkout/sessions`), of the connected
    /// `account` when there is one.
    pub async fn list_page<Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
        account: Option<&AccountId>,
    ) -> Result<Page, GatewayError> {
        let raw = self
            .call(&Priority::Background, || {
                let request = RequestBuilder::new(StripeMethod::Get, path)
                    .query(query)
                    .customize::<miniserde::json::Value>();
                on_account(request, account).send(&self.client)
            })
            .await?;
        let value: Value = serde_json::from_str(&miniserde::json::to_string(&raw))
            .map_err(|e| GatewayError::Unavailable(format!("unreadable list from Stripe: {e}")))?;
        Ok(Page {
            has_more: value["has_more"].as_bool().unwrap_or(false),
            data: value["data"].as_array().cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ui_mode;

    #[test]
    fn ui_mode_is_spelt_as_the_pinned_api_version_spells_it() {
        assert_eq!(ui_mode(true, "2025-09-30.clover"), "embedded");
        assert_eq!(ui_mode(false, "2026-03-24.clover"), "hosted");
        assert_eq!(ui_mode(true, "2026-03-25.dahlia"), "embedded_page");
        assert_eq!(ui_mode(false, "2026-09-30.endive"), "hosted_page");
        // The version this build pins, sent as `Stripe-Version` with every request.
        let pinned = super::super::pinned_api_version();
        assert_eq!(ui_mode(true, pinned), "embedded_page", "{pinned}");
    }
}
