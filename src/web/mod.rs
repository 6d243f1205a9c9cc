//! The HTTP surface: Stripe's webhooks, the customer's landing page, the JSON outcome
//! and the operator's probes.

mod health;
mod landing;
mod outcome;
mod webhook;

use std::time::Duration;

use actix_web::web;

use crate::actors::Sessions;
use crate::configuration::Secret;
use crate::db::Database;
use crate::inbox::Inbox;

/// Largest webhook body accepted; Stripe's Checkout events are a few KiB.
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

/// What every handler shares.
pub struct AppState {
    pub sessions: Sessions,
    pub db: Database,
    pub inbox: Inbox,
    pub webhook_secrets: Vec<Secret>,
    /// How long a customer's request waits for the session's actor.
    pub landing_wait: Duration,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhook")
            .app_data(web::PayloadConfig::new(WEBHOOK_BODY_LIMIT))
            .route(web::post().to(webhook::receive)),
    )
    .route("/after-checkout", web::get().to(landing::after_checkout))
    .route(
        "/api/checkout-sessions/{id}",
        web::get().to(landing::outcome_json),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz));
}
