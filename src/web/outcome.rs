//! Looking up a session's outcome for a customer, shared by the HTML page and the JSON API.

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;

use super::AppState;
use crate::domain::{Outcome, SessionId};
use crate::fulfillment::{Customer, FulfillError, Source, Trigger};

/// Why a customer's request has no outcome to show.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("the session_id parameter is missing")]
    MissingId,
    #[error("the session_id is not valid: {0}")]
    MalformedId(String),
    #[error("no such Checkout Session")]
    UnknownSession,
    #[error("payment confirmation is temporarily unavailable")]
    Unavailable,
    #[error("too many lookups from this address; try again in {} s", retry_after_secs(*.0))]
    TooManyLookups(Duration),
}

impl LookupError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingId | Self::MalformedId(_) => StatusCode::BAD_REQUEST,
            Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyLookups(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Seconds the client should wait before asking again, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooManyLookups(wait) => Some(retry_after_secs(*wait)),
            _ => None,
        }
    }
}

fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Parses the id, asks the session's actor to fulfil (as the customer, ahead of the
/// webhook backlog) and waits for the outcome within `landing_wait`; no Stripe call is
/// made or waited for after it. Only a Stripe call counts against the client's
/// allowance, not what is answered from the database; a client past it is answered
/// from the database alone.
pub async fn lookup(
    state: &AppState,
    request: &HttpRequest,
    raw_id: Option<&str>,
) -> Result<Arc<Outcome>, LookupError> {
    let raw_id = raw_id
        .filter(|id| !id.is_empty())
        .ok_or(LookupError::MissingId)?;
    let id = SessionId::parse(raw_id).map_err(LookupError::MalformedId)?;
    // Neither costs a Stripe call: a live session never exists for a test key (nor the
    // reverse), and an id Stripe just said it does not know is still unknown.
    if id.is_live() != state.livemode {
        return Err(LookupError::UnknownSession);
    }
    if state.unknown.contains(&id) {
        // Unless a signed event has arrived since, on any replica: a connected account's
        // session is unknown to the platform until its event names the account.
        match state.db.knows_session(&id).await {
            Ok(true) => state.unknown.forget(&id),
            Ok(false) => return Err(LookupError::UnknownSession),
            Err(error) => {
                tracing::warn!(session.id = %id, error = %format!("{error:#}"), "could not read a customer's session");
                return Err(LookupError::Unavailable);
            }
        }
    }
    let client = state.clients.client(request);
    if let Some(wait) = client.and_then(|client| state.clients.spent(client)) {
        // Past its allowance: what is recorded is still shown, at one read and no actor.
        return match state.db.outcome(&id).await {
            Ok(Some(recorded)) => Ok(Arc::new(recorded)),
            Ok(None) => Err(LookupError::TooManyLookups(wait)),
            Err(error) => {
                tracing::warn!(session.id = %id, error = %format!("{error:#}"), "could not read a customer's session");
                Err(LookupError::Unavailable)
            }
        };
    }
    let gone_at = tokio::time::Instant::now() + state.landing_wait;
    let clients = Arc::clone(&state.clients);
    let customer = Customer::new(gone_at, move || match client {
        Some(client) => clients.admit(client),
        None => Ok(()),
    });
    let attempt = state
        .sessions
        .handle(&id, Trigger::Fulfill(Source::Customer(customer)));
    match tokio::time::timeout(state.landing_wait, attempt).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(FulfillError::UnknownSession)) => {
            state.unknown.insert(id);
            Err(LookupError::UnknownSession)
        }
        Ok(Err(FulfillError::AllowanceSpent(wait))) => Err(LookupError::TooManyLookups(wait)),
        Ok(Err(FulfillError::CustomerGone)) | Err(_) => {
            tracing::warn!(session.id = %id, wait_ms = state.landing_wait.as_millis() as u64, "customer's session not confirmed in time");
            Err(LookupError::Unavailable)
        }
        Ok(Err(error)) => {
            tracing::warn!(session.id = %id, error = %error, "could not confirm a customer's session");
            Err(LookupError::Unavailable)
        }
    }
}
