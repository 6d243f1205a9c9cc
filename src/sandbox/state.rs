//! The simulator's memory: its Checkout Sessions, the events it sent, and where it sends
//! them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use super::objects::{self, ItemSpec};
use super::refunds::RefundRecord;
use crate::catalog::Catalog;

/// How many arrival times of API requests the simulator remembers.
pub const CALL_TIMES_KEPT: usize = 100_000;

/// How long a session stays open unless created with `expires_at`: 24 hours, as at Stripe.
pub const DEFAULT_EXPIRY_SECS: i64 = 86_400;

/// A session the simulator knows.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub status: String,
    pub payment_status: String,
    pub currency: String,
    pub email: Option<String>,
    pub items: Vec<ItemSpec>,
    /// `collected_information.shipping_details`, Stripe-shaped.
    pub shipping_details: Option<Value>,
    /// Whether the hosted page asks for a shipping address.
    pub collect_shipping: bool,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    /// Seconds since the epoch.
    pub created: i64,
    /// When the session stops taking payment, in seconds since the epoch.
    pub expires_at: i64,
    /// The metadata it was created with.
    pub metadata: serde_json::Map<String, Value>,
    /// Embedded sessions: where the customer goes once paid.
    pub return_url: Option<String>,
    /// `ui_mode` as it was asked for; hosted when `None`.
    pub ui_mode: Option<String>,
    /// Embedded sessions: what Stripe.js mounts the form with.
    pub client_secret: Option<String>,
    /// The connected account the session belongs to (Stripe Connect): the API shows it
    /// only to requests that name this account in `Stripe-Account`, and its events carry
    /// `account`.
    pub account: Option<String>,
}

impl SessionSpec {
    /// A completed, paid session with `items` as (description, unit amount, quantity).
    pub fn paid(items: &[(&str, i64, u64)]) -> Self {
        Self {
            status: "complete".into(),
            payment_status: "paid".into(),
            currency: "usd".into(),
            email: Some("customer@example.com".into()),
            items: items
                .iter()
                .enumerate()
                .map(|(i, (description, unit_amount, quantity))| ItemSpec {
                    description: (*description).to_owned(),
                    price_id: format!("price_{i}{}", description.len()),
                    unit_amount: *unit_amount,
                    quantity: *quantity,
                })
                .collect(),
            shipping_details: None,
            collect_shipping: false,
            success_url: None,
            cancel_url: None,
            created: crate::db::now_ms() / 1000,
            expires_at: crate::db::now_ms() / 1000 + DEFAULT_EXPIRY_SECS,
            metadata: serde_json::Map::new(),
            account: None,
            return_url: None,
            ui_mode: None,
            client_secret: None,
        }
    }

    /// The same session, belonging to connected account `account`.
    pub fn on_account(mut self, account: &str) -> Self {
        self.account = Some(account.into());
        self
    }

    /// The same session with its items' prices set to `price_ids`, in order (for example
    /// prices of the catalog).
    pub fn with_prices(mut self, price_ids: &[&str]) -> Self {
        for (item, price_id) in self.items.iter_mut().zip(price_ids) {
            item.price_id = (*price_id).to_owned();
        }
        self
    }

    /// The same session in another currency.
    pub fn with_currency(mut self, currency: &str) -> Self {
        self.currency = currency.into();
        self
    }

    /// The same session with the customer's shipping address collected.
    pub fn with_shipping(
        mut self,
        name: &str,
        line1: &str,
        city: &str,
        postal_code: &str,
        country: &str,
    ) -> Self {
        self.shipping_details = Some(objects::shipping_details(
            name,
            line1,
            city,
            postal_code,
            country,
        ));
        self
    }

    /// The same session with another `payment_status`.
    pub fn with_payment_status(mut self, payment_status: &str) -> Self {
        self.payment_status = payment_status.into();
        self
    }

    /// The same session with another `status`.
    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }

    /// Whether Stripe.js mounts it in the merchant's page, rather than a redirect.
    pub fn embedded(&self) -> bool {
        self.client_secret.is_some()
    }

    pub fn amount_total(&self) -> i64 {
        self.items.iter().map(ItemSpec::amount_total).sum()
    }

    /// The session as Stripe's API shows it; `hosted` is the base of its checkout page.
    pub fn to_json(&self, id: &str, hosted: &str) -> Value {
        let mut session = objects::checkout_session(
            id,
            &self.status,
            &self.payment_status,
            &self.currency,
            self.amount_total(),
            self.email.as_deref(),
        );
        session["created"] = self.created.into();
        session["expires_at"] = self.expires_at.into();
        session["customer_email"] = self.email.clone().into();
        session["ui_mode"] = self.ui_mode.as_deref().unwrap_or("hosted").into();
        session["return_url"] = self.return_url.clone().into();
        session["client_secret"] = self.client_secret.clone().into();
        session["metadata"] = Value::Object(self.metadata.clone());
        session["url"] = if self.status == "open" && !self.embedded() {
            format!("{hosted}/checkout/{id}").into()
        } else {
            Value::Null
        };
        session["payment_intent"] = if self.status == "complete" {
            objects::payment_intent_of(id).into()
        } else {
            Value::Null
        };
        session["success_url"] = self.success_url.clone().into();
        session["cancel_url"] = self.cancel_url.clone().into();
        if let Some(details) = &self.shipping_details {
            session["collected_information"] = serde_json::json!({
                "business_name": null, "individual_name": null, "shipping_details": details
            });
        }
        session
    }
}

/// An event the simulator created.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub body: String,
    /// The connected account it happened on (its `account`); `None` for the platform.
    pub account: Option<String>,
    /// Whether a delivery was answered 2xx.
    pub delivered: bool,
}

/// Where signed webhooks go.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

pub(super) struct State {
    pub sessions: HashMap<String, SessionSpec>,
    /// Statuses to answer instead of the real response, one per request.
    pub faults: VecDeque<u16>,
    pub delay: Duration,
    pub calls: HashMap<String, usize>,
    /// When each authorized API request arrived, the latest [`CALL_TIMES_KEPT`].
    pub call_times: VecDeque<std::time::Instant>,
    pub next_id: u64,
    pub events: Vec<EventRecord>,
    pub webhooks: Option<WebhookTarget>,
    /// Events are recorded but never delivered, as when an endpoint was down for days.
    pub drop_webhooks: bool,
    /// Base URL of the hosted checkout pages.
    pub hosted: String,
    pub catalog: Arc<Catalog>,
    /// How long a bank debit takes to succeed or fail.
    pub payment_delay: Duration,
    /// The one API key accepted; any `sk_…` or `rk_…` key when unset (the test double).
    pub api_key: Option<String>,
    /// The base every `success_url` and `cancel_url` must be under; any URL when unset.
    pub redirects_under: Option<String>,
    /// Refunds made through `POST /v1/refunds`, oldest first.
    pub refunds: Vec<RefundRecord>,
    /// Disputes opened by the sandbox's buttons: payment intent, dispute id, status.
    pub disputes: Vec<(String, String, &'static str)>,
}

/// The simulator's shared state, and its HTTP client for webhooks; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    state: Arc<Mutex<State>>,
    pub(super) client: reqwest::Client,
}

impl Shared {
    pub(super) fn new(catalog: Arc<Catalog>, hosted: String, payment_delay: Duration) -> Self {
        let state = Arc::new(Mutex::new(State {
            sessions: HashMap::new(),
            faults: VecDeque::new(),
            delay: Duration::ZERO,
            calls: HashMap::new(),
            call_times: VecDeque::new(),
            next_id: 0,
            events: Vec::new(),
            webhooks: None,
            drop_webhooks: false,
            hosted,
            catalog,
            payment_delay,
            api_key: None,
            redirects_under: None,
            refunds: Vec::new(),
            disputes: Vec::new(),
        }));
        Self {
            state,
            client: reqwest::Client::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// The body of a webhook event of `event_type` about session `id`, from the account
    /// the session belongs to.
    pub fn event_body(&self, event_id: &str, event_type: &str, id: &str, created: i64) -> String {
        let spec = self.sessions.get(id);
        let object = spec
            .map(|spec| spec.to_json(id, &self.hosted))
            .unwrap_or_default();
        let mut event = objects::event(event_id, event_type, object, created);
        if let Some(account) = spec.and_then(|spec| spec.account.as_deref()) {
            event["account"] = account.into();
        }
        event.to_string()
    }

    /// A fresh id with Stripe's prefix.
    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:016x}{}", self.next_id, fastrand::u64(..))
    }
}
