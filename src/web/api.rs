//! `POST /api/checkout-sessions`: a Checkout Session for any front end, with the
//! storefront's catalog checks, stock holds and pacing.
//!
//! Two kinds of caller are let in. The merchant's own back end shows `API_TOKEN` as a
//! bearer token. The storefront's own pages show the token of their CSRF cookie in the
//! `X-CSRF-Token` header, from the shop's origin: another site can neither read the
//! cookie nor send the header without a CORS preflight, which fulfilld never answers.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::checkout::{Cart, MAX_LINES, OpenError};

/// The largest request body read: twenty lines with room to spare.
pub const API_BODY_LIMIT: usize = 16 * 1024;
/// The storefront's CSRF cookie, and the header its pages repeat it in.
pub const CSRF_COOKIE: &str = "fulfilld_csrf";
const CSRF_HEADER: &str = "x-csrf-token";
/// The longest price id or email address taken.
const MAX_TEXT: usize = 255;

/// A field the caller got wrong, and how.
#[derive(Debug)]
struct Invalid {
    field: String,
    message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// An error answer: `{"error": {"code", "message", "field"?}}`.
fn problem(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> HttpResponse {
    let mut error = json!({ "code": code, "message": message });
    if let Some(field) = field {
        error["field"] = json!(field);
    }
    HttpResponse::build(status).json(json!({ "error": error }))
}

pub async fn create(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if !allowed(&request, &state) {
        let mut refused = problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Send `Authorization: Bearer <API_TOKEN>`, or call from the shop's own pages \
             with their CSRF token.",
            None,
        );
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    let cart = match parse(&body) {
        Ok(cart) => cart,
        Err(bad) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &bad.message,
                Some(&bad.field),
            );
        }
    };
    let opener = state.opener();
    let cart = match opener.check(cart) {
        Ok(cart) => cart,
        Err(error) => {
            let field = match &error {
                OpenError::UnknownPrice(index, _) => format!("lines[{index}].price"),
                OpenError::Quantity(index) => format!("lines[{index}].quantity"),
                _ => "lines".to_owned(),
            };
            let message = error.to_string();
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &message,
                Some(&field),
            );
        }
    };
    // Each session costs a Stripe call, from the caller's allowance.
    if let Some(client) = state.clients.client(&request)
        && let Err(wait) = state.clients.admit(client)
    {
        let mut refused = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many checkouts from this client; try again shortly.",
            None,
        );
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
        return refused;
    }
    match opener.open(cart).await {
        Ok(created) => HttpResponse::Created().json(json!({
            "id": created.id,
            "url": created.url,
        })),
        Err(OpenError::SoldOut { name, available }) => problem(
            StatusCode::CONFLICT,
            "sold_out",
            &format!("{name} has {available} left, fewer than asked for."),
            Some("lines"),
        ),
        Err(error) => {
            tracing::warn!(error = %error, "could not create a Checkout Session for the API");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Checkout is unavailable just now; nothing was created. Try again shortly.",
                None,
            )
        }
    }
}

/// Whether `request` shows `API_TOKEN`, or comes from the storefront's own page with its
/// CSRF token.
fn allowed(request: &HttpRequest, state: &AppState) -> bool {
    let same = |a: &str, b: &str| Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes());
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    if let Some(token) = &state.checkout.api_token
        && let Some(given) =
            header(header::AUTHORIZATION.as_str()).and_then(|value| value.strip_prefix("Bearer "))
    {
        return same(token.expose(), given.trim());
    }
    let origin = origin_of(&state.public_url);
    let from_shop = header(header::ORIGIN.as_str()).is_some_and(|given| given == origin);
    let cookie = request.cookie(CSRF_COOKIE);
    match (from_shop, cookie, header(CSRF_HEADER)) {
        (true, Some(cookie), Some(given)) => {
            !cookie.value().is_empty() && same(cookie.value(), given)
        }
        _ => false,
    }
}

/// `scheme://host[:port]` of a URL: what browsers send as `Origin`.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => &url[..after_scheme + slash],
        None => url,
    }
}

/// The storefront's CSRF token for this visitor: the one its cookie holds, or a new one
/// with the cookie to set.
pub fn csrf_token(request: &HttpRequest) -> (String, Option<Cookie<'static>>) {
    if let Some(cookie) = request.cookie(CSRF_COOKIE)
        && cookie.value().len() == 32
        && cookie.value().bytes().all(|b| b.is_ascii_hexdigit())
    {
        return (cookie.value().to_owned(), None);
    }
    let token = format!("{:032x}", fastrand::u128(..));
    let cookie = Cookie::build(CSRF_COOKIE, token.clone())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    (token, Some(cookie))
}

/// Reads `{"lines": [{"price", "quantity"}, …], "email"?}`, naming the first field at
/// fault.
fn parse(body: &[u8]) -> Result<Cart, Invalid> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| invalid("body", format!("expected a JSON object: {error}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("body", "expected a JSON object"))?;
    only(object, "", &["lines", "email"])?;
    let lines = object
        .get("lines")
        .ok_or_else(|| invalid("lines", "required"))?
        .as_array()
        .ok_or_else(|| invalid("lines", "expected an array"))?;
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(invalid("lines", format!("expected 1 to {MAX_LINES} lines")));
    }
    let mut cart = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let at = |name: &str| format!("lines[{index}]{name}");
        let line = line
            .as_object()
            .ok_or_else(|| invalid(at(""), "expected an object"))?;
        only(line, &at(""), &["price", "quantity"])?;
        let price = line
            .get("price")
            .ok_or_else(|| invalid(at(".price"), "required"))?
            .as_str()
            .filter(|price| !price.is_empty() && price.len() <= MAX_TEXT)
            .ok_or_else(|| invalid(at(".price"), "expected a Stripe Price id"))?;
        let quantity = line
            .get("quantity")
            .ok_or_else(|| invalid(at(".quantity"), "required"))?
            .as_u64()
            .ok_or_else(|| invalid(at(".quantity"), "expected a whole number"))?;
        cart.push((price.to_owned(), quantity));
    }
    let email = match object.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(email))
            if email.len() <= MAX_TEXT && email.parse::<lettre::Address>().is_ok() =>
        {
            Some(email.clone())
        }
        Some(_) => return Err(invalid("email", "expected an email address")),
    };
    Ok(Cart { lines: cart, email })
}

/// Refuses a field `object` should not have.
fn only(object: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), Invalid> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) if at.is_empty() => Err(invalid(key.as_str(), "unknown field")),
        Some(key) => Err(invalid(format!("{at}.{key}"), "unknown field")),
        None => Ok(()),
    }
}
