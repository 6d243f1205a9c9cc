//! Looking up a session's outcome for a customer, shared by the HTML page and the JSON API.

use std::sync::Arc;

use actix_web::http::StatusCode;

use super::AppState;
use crate::domain::{Outcome, SessionId};
use crate::fulfillment::{FulfillError, Source, Trigger};

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
}

impl LookupError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingId | Self::MalformedId(_) => StatusCode::BAD_REQUEST,
            Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Parses the id, asks the session's actor to fulfil (as the customer, ahead of the
/// webhook backlog) and waits for the outcome within `landing_wait`.
pub async fn lookup(state: &AppState, raw_id: Option<&str>) -> Result<Arc<Outcome>, LookupError> {
    let raw_id = raw_id
        .filter(|id| !id.is_empty())
        .ok_or(LookupError::MissingId)?;
    let id = SessionId::parse(raw_id).map_err(LookupError::MalformedId)?;
    // Neither costs a Stripe call: a live session never exists for a test key (nor the
    // reverse), and an id Stripe just said it does not know is still unknown.
    if id.is_live() != state.livemode || state.unknown.contains(&id) {
        return Err(LookupError::UnknownSession);
    }
    let attempt = state
        .sessions
        .handle(&id, Trigger::Fulfill(Source::Customer));
    match tokio::time::timeout(state.landing_wait, attempt).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(FulfillError::UnknownSession)) => {
            state.unknown.insert(id);
            Err(LookupError::UnknownSession)
        }
        Ok(Err(error)) => {
            tracing::warn!(session.id = %id, error = %error, "could not confirm a customer's session");
            Err(LookupError::Unavailable)
        }
        Err(_elapsed) => {
            tracing::warn!(session.id = %id, wait_ms = state.landing_wait.as_millis() as u64, "customer's session not confirmed in time");
            Err(LookupError::Unavailable)
        }
    }
}
