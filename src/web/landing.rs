//! `GET /after-checkout` (HTML) and `GET /api/checkout-sessions/{id}` (JSON).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use utoipa::ToSchema;

use super::AppState;
use super::outcome::{LookupError, lookup};
use crate::access::AccessSigner;
use crate::domain::{AccessGrant, ItemLine, Locale, Outcome, ShipmentStatus, Status, format_money};
use crate::metrics::{METRICS, Route, seconds};

/// Seconds before a page that is still waiting reloads itself.
const REFRESH_SECS: u32 = 5;

#[derive(Deserialize)]
struct LandingQuery {
    session_id: Option<String>,
}

#[derive(Template)]
#[template(path = "landing.html")]
struct LandingPage {
    status: &'static str,
    refresh: Option<u32>,
    items: Vec<ItemLine>,
    total: Option<String>,
    access: Vec<AccessGrant>,
    /// What refunds gave back, once anything was.
    refunded: Option<String>,
    /// Sandbox mode: the order's path under the simulator, for its refund and dispute
    /// buttons, while there is anything left to refund.
    sandbox_order: Option<String>,
    shipment: Option<ShipmentView>,
}

struct ShipmentView {
    state: &'static str,
    address: Vec<String>,
}

#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage {
    title: &'static str,
    message: String,
    refresh: Option<u32>,
}

/// Why there is no outcome to show: `{"error": {"message", "status"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomeError {
    pub error: OutcomeProblem,
}

/// What went wrong, and the HTTP status it was answered with.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomeProblem {
    /// For a person to read.
    pub message: String,
    pub status: u16,
}

/// The customer's landing page after Checkout.
pub async fn after_checkout(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let session_id = web::Query::<LandingQuery>::from_query(request.query_string())
        .ok()
        .and_then(|query| query.into_inner().session_id);
    let started = Instant::now();
    let response = match lookup(&state, &request, session_id.as_deref()).await {
        Ok(outcome) => render(
            landing_page(&outcome, state.sandbox, state.locale, &state.access),
            actix_web::http::StatusCode::OK,
        ),
        Err(error) => with_retry_after(render(problem_page(&error), error.status()), &error),
    };
    observe("page", started);
    response
}

/// What became of a Checkout Session.
///
/// The landing page's outcome as JSON, for embedded checkouts and single-page apps: asks
/// the session's actor to fulfil it, as the landing page does, and answers once it has.
#[utoipa::path(
    get,
    path = "/api/checkout-sessions/{id}",
    operation_id = "get_outcome",
    tag = "checkout",
    params(("id" = String, Path, description = "The Checkout Session's id (`cs_…`)")),
    responses(
        (status = 200, description = "The session's outcome", body = Outcome),
        (status = 400, description = "The id is not a Checkout Session id", body = OutcomeError),
        (status = 404, description = "No such Checkout Session", body = OutcomeError),
        (status = 429, description = "Too many lookups from this client; retry after `Retry-After`", body = OutcomeError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Stripe or the database could not be reached in time; retry", body = OutcomeError),
    )
)]
pub async fn outcome_json(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let response = match shown(&state, &request, path.as_str()).await {
        Ok(outcome) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(&outcome),
        Err(error) => with_retry_after(
            HttpResponse::build(error.status()).json(OutcomeError {
                error: OutcomeProblem {
                    message: error.to_string(),
                    status: error.status().as_u16(),
                },
            }),
            &error,
        ),
    };
    observe("json", started);
    response
}

/// The session's outcome as the customer is shown it: its access links, and its shipment
/// listing what is left to ship.
async fn shown(state: &AppState, request: &HttpRequest, id: &str) -> Result<Outcome, LookupError> {
    let outcome = lookup(state, request, Some(id)).await?;
    let mut outcome = Outcome::clone(&outcome);
    outcome.access = state.access.links(&outcome, &outcome.access);
    if let Err(error) = state.db.leave_off_shipment(&mut outcome).await {
        tracing::warn!(session.id = %outcome.session_id, error = %format!("{error:#}"), "could not read a customer's session");
        return Err(LookupError::Unavailable);
    }
    Ok(outcome)
}

fn observe(route: &'static str, started: Instant) {
    METRICS
        .landing
        .get_or_create(&Route { route })
        .observe(seconds(started.elapsed()));
}

/// Adds `Retry-After` to the answer to a client over its allowance.
fn with_retry_after(mut response: HttpResponse, error: &LookupError) -> HttpResponse {
    if let Some(secs) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    response
}

fn landing_page(
    outcome: &Outcome,
    sandbox: bool,
    locale: Locale,
    signer: &AccessSigner,
) -> Result<String, askama::Error> {
    let money = |minor, currency: &str| format_money(minor, currency, locale);
    let refundable = matches!(
        outcome.status,
        Status::Fulfilled | Status::PartiallyRefunded | Status::Disputed
    );
    LandingPage {
        status: outcome.status.as_str(),
        refresh: (outcome.status == Status::AwaitingPayment).then_some(REFRESH_SECS),
        items: outcome.item_lines(money),
        total: outcome.formatted_total(money),
        access: signer.links(outcome, outcome.active_access()),
        refunded: outcome.formatted_refunded(money),
        sandbox_order: (sandbox && refundable)
            .then(|| format!("/sandbox/checkout/{}", outcome.session_id)),
        shipment: outcome.shipment.as_ref().map(|shipment| ShipmentView {
            state: match shipment.status {
                ShipmentStatus::Pending => "Being prepared for the warehouse.",
                ShipmentStatus::Submitted => "With the warehouse, on its way soon.",
                ShipmentStatus::AwaitingManualHandling => "Being packed by the shop.",
                ShipmentStatus::Failed => "Delayed: the shop has been told and will be in touch.",
                ShipmentStatus::Cancelled => "Cancelled: the order was refunded before it shipped.",
                ShipmentStatus::Held => "On hold while the payment is reviewed.",
            },
            address: shipment
                .address
                .as_ref()
                .map(|a| a.lines())
                .unwrap_or_default(),
        }),
    }
    .render()
}

fn problem_page(error: &LookupError) -> Result<String, askama::Error> {
    let (title, message, refresh) = match error {
        LookupError::MissingId | LookupError::MalformedId(_) => (
            "That link is not complete",
            "This page needs the session_id that Checkout adds to the link. Please use the \
             link from your checkout, or contact the shop."
                .to_owned(),
            None,
        ),
        LookupError::UnknownSession => (
            "We could not find that order",
            "No checkout matches this link. If you have paid, your receipt has the details; \
             otherwise please contact the shop."
                .to_owned(),
            None,
        ),
        LookupError::Unavailable => (
            "We are confirming your order",
            "Your payment is safe. We could not reach our payment provider just now; this \
             page will try again in a few seconds."
                .to_owned(),
            Some(REFRESH_SECS),
        ),
        LookupError::TooManyLookups(_) => (
            "Please wait a moment",
            "This address has asked about many orders in a short time. Your payment is \
             safe; please wait a moment."
                .to_owned(),
            error
                .retry_after()
                .map(|secs| u32::try_from(secs).unwrap_or(u32::MAX)),
        ),
    };
    ProblemPage {
        title,
        message,
        refresh,
    }
    .render()
}

fn render(
    page: Result<String, askama::Error>,
    status: actix_web::http::StatusCode,
) -> HttpResponse {
    match page {
        Ok(body) => HttpResponse::build(status)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(error) => {
            tracing::error!(error = %error, "could not render a page");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("Something went wrong on our side. Please reload this page.")
        }
    }
}
