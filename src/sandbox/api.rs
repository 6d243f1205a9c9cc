//! The simulator's Stripe API: create, retrieve (with `expand[]`), list and list the line
//! items of Checkout Sessions, and list Events; Stripe-shaped errors, fault injection and
//! a count of calls per session.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::Value;

use super::objects::{self, EMBEDDED_ITEMS};
use super::state::{CALL_TIMES_KEPT, SessionSpec, Shared};

type Params = web::Query<Vec<(String, String)>>;

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A Stripe-shaped error answer.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status.is_server_error() {
            response.insert_header(("Stripe-Should-Retry", "true"));
        }
        response.json(objects::error(self.kind, self.code, &self.message))
    }
}

pub(super) fn stripe_error(
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: &str,
) -> ApiError {
    ApiError {
        status,
        kind,
        code,
        message: message.to_owned(),
    }
}

/// Applies the delay, the key check and any injected fault; counts the call against
/// `session` when the request is about one.
pub(super) async fn admit(
    request: &HttpRequest,
    shared: &Shared,
    session: Option<&str>,
) -> Result<(), ApiError> {
    let key = request
        .headers()
        .get("Authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let api_key = shared.lock().api_key.clone();
    let authorized = match (key, api_key) {
        (Some(key), Some(expected)) => constant_time_eq(key.as_bytes(), expected.as_bytes()),
        (Some(key), None) => key.starts_with("sk_") || key.starts_with("rk_"),
        (None, _) => false,
    };
    if !authorized {
        let message = match key {
            Some(_) => "Invalid API Key provided.",
            None => "You did not provide an API key.",
        };
        return Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            message,
        ));
    }
    // Counted and delayed only once authorized: strangers neither grow the counts nor use
    // up injected faults.
    let (delay, fault) = {
        let mut state = shared.lock();
        if state.call_times.len() == CALL_TIMES_KEPT {
            state.call_times.pop_front();
        }
        state.call_times.push_back(std::time::Instant::now());
        if let Some(id) = session {
            *state.calls.entry(id.to_owned()).or_default() += 1;
        }
        (state.delay, state.faults.pop_front())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = fault {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(match status {
            429 => stripe_error(
                code,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests",
            ),
            _ => stripe_error(code, "api_error", None, "An unknown error occurred"),
        });
    }
    Ok(())
}

/// Compares without an early exit, so the time taken tells nothing of the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The connected account a request acts as (`Stripe-Account`); `None` for the platform.
fn acting_as(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get("Stripe-Account")
        .and_then(|value| value.to_str().ok())
}

/// The session `id`, if the account the request acts as (`Stripe-Account`, or the
/// platform without it) is the one it belongs to: like Stripe, a connected account's
/// session does not exist for anyone else.
fn find(
    request: &HttpRequest,
    shared: &Shared,
    id: &str,
) -> Result<(SessionSpec, String), ApiError> {
    let account = acting_as(request);
    let state = shared.lock();
    state
        .sessions
        .get(id)
        .filter(|spec| spec.account.as_deref() == account)
        .map(|spec| (spec.clone(), state.hosted.clone()))
        .ok_or_else(|| {
            stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such checkout.session: '{id}'"),
            )
        })
}

pub(super) async fn retrieve(
    request: HttpRequest,
    path: web::Path<String>,
    query: Params,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    admit(&request, &shared, Some(&id)).await?;
    let (spec, hosted) = find(&request, &shared, &id)?;
    let mut session = spec.to_json(&id, &hosted);
    if query
        .iter()
        .any(|(key, value)| key.starts_with("expand") && value == "line_items")
    {
        session["line_items"] = items_page(&id, &spec, None, EMBEDDED_ITEMS);
    }
    Ok(HttpResponse::Ok().json(session))
}

pub(super) async fn line_items(
    request: HttpRequest,
    path: web::Path<String>,
    query: Params,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    admit(&request, &shared, Some(&id)).await?;
    let (spec, _) = find(&request, &shared, &id)?;
    let limit = limit(&query)?;
    Ok(HttpResponse::Ok().json(items_page(
        &id,
        &spec,
        param(&query, "starting_after"),
        limit,
    )))
}

fn limit(query: &[(String, String)]) -> Result<usize, ApiError> {
    let limit = param(query, "limit")
        .and_then(|raw| raw.parse::<usize>().ok())
        .unwrap_or(10);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            "limit must be between 1 and 100",
        ))
    }
}

/// One page of `all`, after the object whose id is `starting_after`.
fn paginate(url: &str, all: Vec<Value>, starting_after: Option<&str>, limit: usize) -> Value {
    let start = starting_after
        .and_then(|after| all.iter().position(|object| object["id"] == after))
        .map_or(0, |position| position + 1);
    let end = (start + limit).min(all.len());
    let data = all
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    objects::list(url, data, end < all.len())
}

fn items_page(id: &str, spec: &SessionSpec, starting_after: Option<&str>, limit: usize) -> Value {
    let all = spec
        .items
        .iter()
        .enumerate()
        .map(|(index, item)| objects::line_item(id, index, item, &spec.currency))
        .collect();
    paginate(
        &format!("/v1/checkout/sessions/{id}/line_items"),
        all,
        starting_after,
        limit,
    )
}

/// `GET /v1/checkout/sessions`: newest first, filtered by `status`, `created[gte]` and
/// `payment_intent`.
pub(super) async fn list_sessions(
    request: HttpRequest,
    query: Params,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    admit(&request, &shared, None).await?;
    let limit = limit(&query)?;
    let status = param(&query, "status");
    let since = param(&query, "created[gte]").and_then(|raw| raw.parse::<i64>().ok());
    let payment_intent = param(&query, "payment_intent");
    let account = acting_as(&request);
    let all = {
        let state = shared.lock();
        let mut sessions: Vec<_> = state
            .sessions
            .iter()
            // Like Stripe, a connected account's sessions are listed only for it.
            .filter(|(_, spec)| spec.account.as_deref() == account)
            .filter(|(_, spec)| status.is_none_or(|status| spec.status == status))
            .filter(|(id, spec)| {
                payment_intent.is_none_or(|wanted| {
                    spec.status == "complete" && objects::payment_intent_of(id) == wanted
                })
            })
            .filter(|(_, spec)| since.is_none_or(|since| spec.created >= since))
            .collect();
        sessions.sort_by(|a, b| b.1.created.cmp(&a.1.created).then(b.0.cmp(a.0)));
        sessions
            .into_iter()
            .map(|(id, spec)| spec.to_json(id, &state.hosted))
            .collect()
    };
    Ok(HttpResponse::Ok().json(paginate(
        "/v1/checkout/sessions",
        all,
        param(&query, "starting_after"),
        limit,
    )))
}

/// `GET /v1/events`: newest first, filtered by `types[]`, `created[gte]` and
/// `delivery_success`.
pub(super) async fn list_events(
    request: HttpRequest,
    query: Params,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    admit(&request, &shared, None).await?;
    let limit = limit(&query)?;
    let types: Vec<&str> = query
        .iter()
        .filter(|(key, _)| key.starts_with("types["))
        .map(|(_, value)| value.as_str())
        .collect();
    let since = param(&query, "created[gte]").and_then(|raw| raw.parse::<i64>().ok());
    let delivered = param(&query, "delivery_success").map(|raw| raw == "true");
    let account = acting_as(&request);
    let all = shared
        .lock()
        .events
        .iter()
        .rev()
        .filter(|event| event.account.as_deref() == account)
        .filter(|event| types.is_empty() || types.contains(&event.event_type.as_str()))
        .filter(|event| since.is_none_or(|since| event.created >= since))
        .filter(|event| delivered.is_none_or(|delivered| event.delivered == delivered))
        .filter_map(|event| serde_json::from_str(&event.body).ok())
        .collect();
    Ok(HttpResponse::Ok().json(paginate(
        "/v1/events",
        all,
        param(&query, "starting_after"),
        limit,
    )))
}
