//! Prometheus metrics, served at `GET /metrics` (or on `METRICS_BIND`).
//!
//! Counters and histograms live in one registry for the process, [`METRICS`], updated where
//! things happen. Figures that are a state rather than a count (the inbox's backlog, dead
//! effects, live actors) are read when scraped, so they are never stale.
//!
//! Every label value is one of a fixed set (a status's `as_str`, an endpoint's name, a
//! reason): never a session id, an event id or an address, so no label can grow without
//! bound.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Endpoint {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StripeCall {
    pub endpoint: &'static str,
    /// The HTTP status, or `timeout` / `network` when no answer came.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PacerPriority {
    pub priority: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EffectAttempt {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// Everything fulfilld counts as it goes.
pub struct Metrics {
    registry: Registry,
    pub webhooks_received: Counter,
    /// Answered 4xx or 5xx, by why.
    pub webhooks_refused: Family<Reason, Counter>,
    /// Durably stored: `new`, `duplicate`; or `ignored` (an event type fulfilld does not act on).
    pub webhooks_stored: Family<Outcome, Counter>,
    /// From the request's arrival at the handler to its answer.
    pub webhook_ack: Histogram,
    /// Statuses recorded, once per session and status, by whichever process claimed them.
    pub fulfillments: Family<Outcome, Counter>,
    /// Every attempt on a session by its result.
    pub fulfillment_attempts: Family<Outcome, Counter>,
    pub reversals: Family<Kind, Counter>,
    /// The landing page and the JSON outcome.
    pub landing: Histograms<Route>,
    pub stripe_requests: Family<StripeCall, Counter>,
    pub stripe_request_duration: Histograms<Endpoint>,
    /// Calls waiting for the pacer now, and how long each waited.
    pub pacer_queue: Family<PacerPriority, Gauge>,
    pub pacer_wait: Histograms<PacerPriority>,
    /// This process's share of STRIPE_MAX_RPS.
    pub pacer_rate: Gauge<f64, AtomicU64>,
    pub effect_attempts: Family<EffectAttempt, Counter>,
    /// Waiting for a database connection (PostgreSQL's pool, SQLite's turn).
    pub db_wait: Histogram,
    /// A unit of database work from its connection to its durable end (commit included).
    pub db_transaction: Histogram,
}

fn latency() -> Histogram {
    // 0.25 ms to about 16 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

impl Metrics {
    fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("fulfilld"),
            webhooks_received: Counter::default(),
            webhooks_refused: Family::default(),
            webhooks_stored: Family::default(),
            webhook_ack: latency(),
            fulfillments: Family::default(),
            fulfillment_attempts: Family::default(),
            reversals: Family::default(),
            landing: Family::new_with_constructor(latency),
            stripe_requests: Family::default(),
            stripe_request_duration: Family::new_with_constructor(latency),
            pacer_queue: Family::default(),
            pacer_wait: Family::new_with_constructor(latency),
            pacer_rate: Gauge::default(),
            effect_attempts: Family::default(),
            db_wait: latency(),
            db_transaction: latency(),
        };
        metrics.registry.register(
            "webhooks_received",
            "Webhook deliveries that reached the handler",
            metrics.webhooks_received.clone(),
        );
        metrics.registry.register(
            "webhooks_refused",
            "Webhook deliveries refused, by reason (signature, malformed, too_large, unavailable)",
            metrics.webhooks_refused.clone(),
        );
        metrics.registry.register(
            "webhooks_stored",
            "Webhook deliveries acknowledged, by outcome (new, duplicate, ignored)",
            metrics.webhooks_stored.clone(),
        );
        metrics.registry.register_with_unit(
            "webhook_ack_duration",
            "Time from a delivery's arrival to its answer",
            Unit::Seconds,
            metrics.webhook_ack.clone(),
        );
        metrics.registry.register(
            "fulfillments",
            "Session statuses recorded by this process, by status",
            metrics.fulfillments.clone(),
        );
        metrics.registry.register(
            "fulfillment_attempts",
            "Attempts on a session, by result",
            metrics.fulfillment_attempts.clone(),
        );
        metrics.registry.register(
            "reversals",
            "Fulfilments reversed by this process, by kind (refunded, partially_refunded, refund_failed)",
            metrics.reversals.clone(),
        );
        metrics.registry.register_with_unit(
            "landing_duration",
            "Time to answer a customer, by route (page, json)",
            Unit::Seconds,
            metrics.landing.clone(),
        );
        metrics.registry.register(
            "stripe_requests",
            "Requests to Stripe's API, by endpoint and HTTP status",
            metrics.stripe_requests.clone(),
        );
        metrics.registry.register_with_unit(
            "stripe_request_duration",
            "Time for one request to Stripe's API, by endpoint",
            Unit::Seconds,
            metrics.stripe_request_duration.clone(),
        );
        metrics.registry.register(
            "stripe_pacer_queue",
            "Calls waiting for the pacer, by priority",
            metrics.pacer_queue.clone(),
        );
        metrics.registry.register_with_unit(
            "stripe_pacer_wait",
            "Time a call waited for the pacer, by priority",
            Unit::Seconds,
            metrics.pacer_wait.clone(),
        );
        metrics.registry.register(
            "stripe_pacer_rate",
            "Calls per second this process may make: its share of STRIPE_MAX_RPS",
            metrics.pacer_rate.clone(),
        );
        metrics.registry.register(
            "effect_attempts",
            "Attempts at effects, by kind and outcome (done, retry, dead, released, superseded)",
            metrics.effect_attempts.clone(),
        );
        metrics.registry.register_with_unit(
            "db_wait",
            "Time waiting for a database connection",
            Unit::Seconds,
            metrics.db_wait.clone(),
        );
        metrics.registry.register_with_unit(
            "db_transaction_duration",
            "Time of a unit of database work, commit included",
            Unit::Seconds,
            metrics.db_transaction.clone(),
        );
        metrics
    }

    /// The process's metrics followed by `current`'s, as OpenMetrics text.
    pub fn render(&self, current: &Registry) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, current))
            .and_then(|()| encode_eof(&mut text));
        text
    }

    pub fn webhook_refused(&self, reason: &'static str) {
        self.webhooks_refused
            .get_or_create(&Reason { reason })
            .inc();
    }

    pub fn reversal(&self, kind: &'static str) {
        self.reversals.get_or_create(&Kind { kind }).inc();
    }

    pub fn webhook_stored(&self, outcome: &'static str) {
        self.webhooks_stored
            .get_or_create(&Outcome { outcome })
            .inc();
    }
}

/// Seconds, as Prometheus wants them.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
