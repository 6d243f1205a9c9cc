//! The simulator's handle: mounts its routes into an actix-web app and lets the sandbox
//! and the tests steer it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use serde_json::Value;

use super::state::{EventRecord, SessionSpec, Shared, WebhookTarget};
use super::{api, creating, disputes, hosted, objects, refunds};
use crate::catalog::Catalog;

/// A Stripe simulator; cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    shared: Shared,
}

/// A refund, as a test describes it.
#[derive(Debug, Clone, Copy)]
pub struct RefundSpec<'a> {
    pub id: &'a str,
    /// The session whose payment it refunds.
    pub session: &'a str,
    pub amount: i64,
    pub status: &'a str,
    /// `metadata.items`.
    pub items: Option<&'a str>,
}

impl Simulator {
    /// A simulator pricing sessions from `catalog`, whose hosted checkout pages live under
    /// `hosted` (the URL at which [`Simulator::configure`]'s routes are reachable).
    pub fn new(catalog: Arc<Catalog>, hosted: &str, payment_delay: Duration) -> Self {
        Self {
            shared: Shared::new(
                catalog,
                hosted.trim_end_matches('/').to_owned(),
                payment_delay,
            ),
        }
    }

    /// Mounts the API (`/v1/…`) and the hosted checkout pages (`/checkout/…`).
    pub fn configure(&self, config: &mut web::ServiceConfig) {
        config
            .app_data(web::Data::new(self.shared.clone()))
            .route(
                "/v1/checkout/sessions",
                web::post().to(creating::create_session),
            )
            .route("/v1/checkout/sessions", web::get().to(api::list_sessions))
            .route("/v1/refunds", web::post().to(refunds::create_refund))
            .route("/v1/checkout/sessions/{id}", web::get().to(api::retrieve))
            .route(
                "/v1/checkout/sessions/{id}/line_items",
                web::get().to(api::line_items),
            )
            .route("/v1/events", web::get().to(api::list_events))
            .route("/checkout/{id}", web::get().to(hosted::show))
            .route("/checkout/{id}/pay", web::post().to(hosted::pay))
            .route("/checkout/{id}/expire", web::post().to(hosted::expire))
            .route("/stripe.js", web::get().to(hosted::stripe_js))
            .route("/checkout/{id}/refund", web::post().to(hosted::refund))
            .route(
                "/checkout/{id}/dispute/{step}",
                web::post().to(disputes::dispute),
            );
    }

    /// Accepts API requests with `key` only, as Stripe accepts only the account's keys.
    pub fn accept_only(&self, key: &str) {
        self.shared.lock().api_key = Some(key.to_owned());
    }

    /// Creates sessions only with a `success_url` and `cancel_url` under `base`, so the
    /// hosted pages never send a customer elsewhere.
    pub fn redirect_only_under(&self, base: &str) {
        self.shared.lock().redirects_under = Some(base.trim_end_matches('/').to_owned());
    }

    /// Sends signed webhooks to `url`, as Stripe does to a registered endpoint.
    pub fn send_webhooks_to(&self, url: &str, secret: &str) {
        self.shared.lock().webhooks = Some(WebhookTarget {
            url: url.to_owned(),
            secret: secret.to_owned(),
        });
    }

    /// Records events but delivers none while `drop` holds, as an endpoint that was down.
    pub fn drop_webhooks(&self, drop: bool) {
        self.shared.lock().drop_webhooks = drop;
    }

    /// Adds a test-mode session and returns its id.
    pub fn add_session(&self, spec: SessionSpec) -> String {
        let mut state = self.shared.lock();
        let id = state.new_id("cs_test_");
        state.sessions.insert(id.clone(), spec);
        id
    }

    /// Forgets a session, as Stripe does for another account's session or a deleted one:
    /// asked about it, the simulator answers 404 `resource_missing`.
    pub fn remove_session(&self, id: &str) -> Option<SessionSpec> {
        self.shared.lock().sessions.remove(id)
    }

    /// Knows session `id` (again).
    pub fn insert_session(&self, id: &str, spec: SessionSpec) {
        self.shared.lock().sessions.insert(id.to_owned(), spec);
    }

    /// Changes a session's `payment_status` (a delayed payment clearing or failing).
    pub fn set_payment_status(&self, id: &str, payment_status: &str) {
        if let Some(session) = self.shared.lock().sessions.get_mut(id) {
            session.payment_status = payment_status.into();
        }
    }

    /// Answers the next `count` API requests with `status` and a Stripe error body.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.shared
            .lock()
            .faults
            .extend(std::iter::repeat_n(status, count));
    }

    /// Delays every API answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// API requests made about session `id`, answered or not.
    pub fn calls(&self, id: &str) -> usize {
        self.shared.lock().calls.get(id).copied().unwrap_or(0)
    }

    /// API requests made about any session, answered or not.
    pub fn total_calls(&self) -> usize {
        self.shared.lock().calls.values().sum()
    }

    /// When each authorized API request arrived, oldest first (the latest 100,000).
    pub fn call_times(&self) -> Vec<std::time::Instant> {
        self.shared.lock().call_times.iter().copied().collect()
    }

    /// The session object as Stripe would embed it in an event's `data.object`.
    pub fn session_object(&self, id: &str) -> Option<Value> {
        let state = self.shared.lock();
        state
            .sessions
            .get(id)
            .map(|spec| spec.to_json(id, &state.hosted))
    }

    /// The JSON body of a webhook event of `event_type` about session `id`.
    pub fn event_payload(&self, event_id: &str, event_type: &str, id: &str) -> String {
        let created = crate::db::now_ms() / 1000;
        self.shared
            .lock()
            .event_body(event_id, event_type, id, created)
    }

    /// The payment intent completed session `id` paid through.
    pub fn payment_intent(&self, id: &str) -> String {
        objects::payment_intent_of(id)
    }

    /// The JSON body of a `refund.*` event (`event_type`) about refund `refund_id` of
    /// `amount` from session `id`'s payment, in `status`, naming `items` if given, created
    /// at `created` (seconds).
    pub fn refund_payload(
        &self,
        event_id: &str,
        event_type: &str,
        refund: &RefundSpec<'_>,
        created: i64,
    ) -> String {
        let state = self.shared.lock();
        let currency = state
            .sessions
            .get(refund.session)
            .map_or("usd", |spec| spec.currency.as_str());
        let object = objects::refund(
            refund.id,
            &objects::payment_intent_of(refund.session),
            refund.amount,
            currency,
            refund.status,
            refund.items,
            created,
        );
        objects::event(event_id, event_type, object, created).to_string()
    }

    /// The JSON body of a `charge.dispute.*` event (`event_type`) about dispute
    /// `dispute_id` of session `id`'s whole payment, in `status`, created at `created`.
    pub fn dispute_payload(
        &self,
        event_id: &str,
        event_type: &str,
        id: &str,
        dispute_id: &str,
        status: &str,
        created: i64,
    ) -> String {
        let state = self.shared.lock();
        let (amount, currency) = state.sessions.get(id).map_or((0, "usd"), |spec| {
            (spec.amount_total(), spec.currency.as_str())
        });
        let object = objects::dispute(
            dispute_id,
            &objects::payment_intent_of(id),
            amount,
            currency,
            status,
            created,
        );
        objects::event(event_id, event_type, object, created).to_string()
    }

    /// The JSON body of a `charge.refunded` event: session `id`'s charge with
    /// `amount_refunded` refunded so far.
    pub fn charge_refunded_payload(
        &self,
        event_id: &str,
        id: &str,
        amount_refunded: i64,
    ) -> String {
        let created = crate::db::now_ms() / 1000;
        let state = self.shared.lock();
        let (amount, currency) = state.sessions.get(id).map_or((0, "usd"), |spec| {
            (spec.amount_total(), spec.currency.as_str())
        });
        let object = objects::refunded_charge(
            &objects::payment_intent_of(id),
            amount,
            amount_refunded,
            currency,
            created,
        );
        objects::event(event_id, "charge.refunded", object, created).to_string()
    }

    /// Records an event of `event_type` about session `id` and delivers it like Stripe
    /// (unless webhooks are dropped); returns the event's id.
    pub async fn emit(&self, event_type: &str, id: &str) -> String {
        hosted::emit(&self.shared, event_type, id).await
    }

    /// Expires open sessions once past their `expires_at`, and sends
    /// `checkout.session.expired` for each, as Stripe does; checks every `every`.
    pub fn spawn_expiry(&self, every: std::time::Duration) {
        let simulator = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let now = crate::db::now_ms() / 1000;
                let due: Vec<String> = {
                    let mut state = simulator.shared.lock();
                    state
                        .sessions
                        .iter_mut()
                        .filter(|(_, spec)| spec.status == "open" && spec.expires_at <= now)
                        .map(|(id, spec)| {
                            spec.status = "expired".into();
                            id.clone()
                        })
                        .collect()
                };
                for id in due {
                    simulator.emit("checkout.session.expired", &id).await;
                }
            }
        });
    }

    /// Every event created so far, oldest first.
    pub fn events(&self) -> Vec<EventRecord> {
        self.shared.lock().events.clone()
    }
}
