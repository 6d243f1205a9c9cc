//! `POST /webhook`: verify, store, acknowledge, then hand to the workers.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;
use std::time::Instant;
use utoipa::ToSchema;

use super::{AppState, ErrorText};
use crate::db::inbox::Stored;
use crate::db::now_ms;
use crate::inbox::{self, Job, Work};
use crate::metrics::{METRICS, seconds};
use crate::stripe::event::{self, EventError};
use crate::stripe::signature::{self, SignatureError};
use crate::telemetry;

/// Why a delivery was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("the event could not be stored; Stripe will retry")]
    Store(#[source] anyhow::Error),
    /// Too large, or cut off before its end.
    #[error("the body could not be read: {0}")]
    Body(actix_web::Error),
}

impl WebhookError {
    /// Why, as the `reason` label of `fulfilld_webhooks_refused_total`.
    fn reason(&self) -> &'static str {
        match self {
            Self::Signature(_) => "signature",
            Self::Event(_) => "malformed",
            Self::Store(_) => "unavailable",
            Self::Body(_) if self.status_code() == StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            Self::Body(_) => "malformed",
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Signature(_) | Self::Event(_) => StatusCode::BAD_REQUEST,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Body(error) => error.as_response_error().status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(ErrorText::new(self.to_string()))
    }
}

/// A delivery acknowledged: Stripe stops retrying it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Received {
    /// Present, and true, for an event of a type fulfilld does not act on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
    /// Always true.
    pub received: bool,
}

/// Receives one of Stripe's events.
///
/// Verifies the raw body against `Stripe-Signature`, stores the event and answers 200
/// before any slow work; the event is then carried out by a worker through its session's
/// actor.
#[utoipa::path(
    post,
    path = "/webhook",
    operation_id = "receive_stripe_event",
    tag = "stripe",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature of the raw body")),
    request_body(content = serde_json::Value, description = "A Stripe event, exactly as Stripe sent it"),
    responses(
        (status = 200, description = "The event is stored, or is of a type fulfilld ignores", body = Received),
        (status = 400, description = "A missing, invalid or expired signature, or a body that is not an event", body = ErrorText),
        (status = 413, description = "The body is over 256 KiB", body = ErrorText),
        (status = 503, description = "The event could not be stored; Stripe retries", body = ErrorText),
    )
)]
pub async fn receive(
    request: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let started = Instant::now();
    METRICS.webhooks_received.inc();
    let answer = match body {
        Ok(body) => accept(&request, body, &state).await,
        Err(error) => Err(WebhookError::Body(error)),
    };
    if let Err(error) = &answer {
        METRICS.webhook_refused(error.reason());
    }
    METRICS.webhook_ack.observe(seconds(started.elapsed()));
    answer
}

#[tracing::instrument(skip_all, fields(event.id, session.id))]
async fn accept(
    request: &HttpRequest,
    body: web::Bytes,
    state: &AppState,
) -> Result<HttpResponse, WebhookError> {
    let header = request
        .headers()
        .get("Stripe-Signature")
        .and_then(|value| value.to_str().ok());
    let now = now_ms() / 1000;
    if let Err(error) = signature::verify(header, &body, &state.webhook_secrets, now) {
        tracing::warn!(reason = %error, "webhook refused");
        return Err(error.into());
    }
    // Only a signed delivery makes background work give way: a flood of unsigned
    // requests must not slow fulfilment down.
    let _arrival = state.inbox.arriving();
    let event = match event::parse(&body) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(reason = %error, "webhook body refused");
            return Err(error.into());
        }
    };
    // The signature check proved the body is what Stripe sent, and parsing proved it is
    // JSON, hence UTF-8.
    let payload = String::from_utf8_lossy(&body).into_owned();
    let Some(to_store) = inbox::to_store(&event, payload) else {
        tracing::debug!(event.id = %event.id(), event.type = %event.type_name(), "event type ignored");
        METRICS.webhook_stored("ignored");
        return Ok(HttpResponse::Ok().json(Received {
            ignored: true,
            received: true,
        }));
    };
    let span = tracing::Span::current();
    span.record("event.id", to_store.id.as_str());
    span.record("session.id", to_store.session_id.as_str());
    let event_id = to_store.id.clone();
    let stored = state.inbox.store(to_store).await.map_err(|error| {
        tracing::error!(error = %format!("{error:#}"), "webhook not stored; answering 503 so Stripe retries");
        WebhookError::Store(error)
    })?;
    METRICS.webhook_stored(match stored {
        Stored::New => "new",
        Stored::Duplicate { .. } => "duplicate",
    });
    if stored != (Stored::Duplicate { processed: true })
        && let Some(job) = Job::of(event)
    {
        state.workers.offer(Work {
            event_id,
            job,
            due_by: None,
            trace: telemetry::current(),
        });
    }
    Ok(HttpResponse::Ok().json(Received {
        ignored: false,
        received: true,
    }))
}
