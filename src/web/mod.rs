//! The HTTP surface: Stripe's webhooks, the storefront, the customer's landing page, the
//! JSON outcome, the operator's probes and the operators' page.

mod access;
mod admin;
mod api;
mod clients;
mod health;
mod landing;
mod listener;
mod metrics;
mod openapi;
mod outcome;
mod storefront;
mod unknown;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use serde::Serialize;
use utoipa::ToSchema;

use crate::access::AccessSigner;
use crate::actors::Sessions;
use crate::catalog::Catalog;
use crate::checkout::Opener;
use crate::configuration::{CheckoutConfig, Secret};
use crate::db::Database;
use crate::domain::Locale;
use crate::effects::Outbox;
use crate::inbox::{Inbox, Workers};
use crate::replicas::Standing;
use crate::stripe::StripeGateway;
pub use admin::Admin;
pub use clients::{ClientLimits, SWEEP_EVERY};
pub use listener::listen;
pub use metrics::{FiguresCache, metrics};
pub use openapi::ApiDoc;
pub use unknown::UnknownSessions;

/// Largest webhook body accepted; Stripe's Checkout events are a few KiB.
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;
/// How long a client has to send a request's line and headers before it is answered 408
/// and cut off.
pub const REQUEST_HEAD_WITHIN: Duration = Duration::from_secs(5);
/// How long a kept-alive connection may idle between requests.
pub const IDLE_KEPT_ALIVE: Duration = Duration::from_secs(5);
/// Connections one server worker holds at once; past it, new ones wait in the backlog.
pub const MAX_CONNECTIONS: usize = 2048;

/// The error answer of `POST /webhook` and `GET /api/access/{token}`: `{"error": "…"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorText {
    /// Why, for a person to read.
    pub error: String,
}

impl ErrorText {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// This replica, and who leads the deployment.
    pub standing: tokio::sync::watch::Receiver<Standing>,
    pub sessions: Sessions,
    pub db: Database,
    pub inbox: Inbox,
    /// Carry out what the inbox stored.
    pub workers: Workers,
    pub webhook_secrets: Vec<Secret>,
    /// How long a customer's request waits for the session's actor.
    pub landing_wait: Duration,
    /// The storefront's products, and the gateway that creates their Checkout Sessions.
    pub catalog: Arc<Catalog>,
    pub stripe: StripeGateway,
    pub public_url: String,
    /// The shop's name, from `MAIL_FROM`.
    pub shop: String,
    /// Sandbox mode: the storefront says payments are simulated.
    pub sandbox: bool,
    /// Whether the key is a live-mode key.
    pub livemode: bool,
    /// Session ids Stripe recently said it does not know.
    pub unknown: UnknownSessions,
    /// Each client's allowance of lookups that cost a Stripe call.
    pub clients: Arc<ClientLimits>,
    /// The operators' page; `None` (every `/admin` path a 404) without `ADMIN_TOKEN`.
    pub admin: Option<Arc<Admin>>,
    /// Wakes the effect dispatcher when an operator retries a dead effect.
    pub outbox: Outbox,
    /// Signs the `{token}` of download links, and checks it.
    pub access: AccessSigner,
    /// The inbox's and outbox's latest figures, for `/metrics`.
    pub figures: FiguresCache,
    /// How the checkouts fulfilld opens are made.
    pub checkout: CheckoutConfig,
    /// How pages write money.
    pub locale: Locale,
}

impl AppState {
    /// Opens checkouts for the storefront and the API.
    pub fn opener(&self) -> Opener<'_> {
        Opener {
            db: &self.db,
            stripe: &self.stripe,
            catalog: &self.catalog,
            public_url: &self.public_url,
            hold: self.checkout.reservation,
        }
    }
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhook")
            .app_data(web::PayloadConfig::new(WEBHOOK_BODY_LIMIT))
            .route(web::post().to(webhook::receive)),
    )
    .service(
        web::resource("/api/checkout-sessions")
            .app_data(web::PayloadConfig::new(api::API_BODY_LIMIT))
            .route(web::post().to(api::create)),
    )
    .route("/", web::get().to(storefront::index))
    .route("/checkout", web::post().to(storefront::checkout))
    .route("/after-checkout", web::get().to(landing::after_checkout))
    .route(
        "/api/checkout-sessions/{id}",
        web::get().to(landing::outcome_json),
    )
    .route("/api/access/{token}", web::get().to(access::access))
    .route("/api/openapi.json", web::get().to(openapi::serve))
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .configure(admin::routes);
}
