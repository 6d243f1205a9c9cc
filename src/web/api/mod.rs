//! `POST /api/checkout-sessions`: a Checkout Session for any front end, with the
//! storefront's catalog checks, stock holds and pacing.
//!
//! Two kinds of caller are let in. The merchant's own back end shows `API_TOKEN` as a
//! bearer token. The storefront's own pages show the token of their CSRF cookie in the
//! `X-CSRF-Token` header, from the shop's origin: another site can neither read the
//! cookie nor send the header without a CORS preflight, which fulfilld never answers.

mod answers;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::checkout::{MAX_LINES, OpenError};
use crate::configuration::CheckoutUi;
use crate::stripe::GatewayError;
use answers::{
    ApiError, CheckoutCreated, NewCheckout, NewCheckoutLine, ProblemCode, SoldOut, SoldOutError,
    problem,
};

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

/// Opens a Checkout Session for a cart.
///
/// Checks the cart against the catalog, holds its physical goods for
/// `RESERVATION_MINUTES` and creates the session at Stripe. For the merchant's back end
/// with `API_TOKEN`, or for the shop's own pages with their CSRF token.
#[utoipa::path(
    post,
    path = "/api/checkout-sessions",
    operation_id = "create_checkout_session",
    tag = "checkout",
    request_body = NewCheckout,
    security(("api_token" = []), ("csrf_token" = [], "csrf_cookie" = [])),
    responses(
        (status = 201, description = "Created: `url` to send the customer to (hosted), or `client_secret` for the embedded form", body = CheckoutCreated),
        (status = 400, description = "The request is malformed; `field` names what is wrong", body = ApiError),
        (status = 401, description = "No `API_TOKEN` bearer token, nor the shop's CSRF token", body = ApiError,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 409, description = "Sold out: fewer of `price` are left than asked for", body = SoldOutError),
        (status = 413, description = "The body is over 16 KiB", body = ApiError),
        (status = 422, description = "Stripe refused the session for the email address given", body = ApiError),
        (status = 429, description = "Too many checkouts from this visitor", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Stripe or the database could not be reached; nothing was created", body = ApiError),
    )
)]
pub async fn create(
    request: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(caller) = caller(&request, &state) else {
        let mut refused = problem(
            StatusCode::UNAUTHORIZED,
            ProblemCode::Unauthorized,
            "Send `Authorization: Bearer <API_TOKEN>`, or call from the shop's own pages \
             with their CSRF token.",
            None,
        );
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    };
    // A body that is too large, or cut off, is answered like any other problem.
    let body = match body {
        Ok(body) => body,
        Err(error) if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::TooLarge,
                "The body is over 16 KiB.",
                None,
            );
        }
        Err(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidRequest,
                "The body could not be read.",
                None,
            );
        }
    };
    let cart = match parse(&body) {
        Ok(cart) => cart.into_cart(),
        Err(bad) => {
            return problem(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidRequest,
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
                OpenError::UnknownPrice(index, _) => format!("line_items[{index}].price"),
                OpenError::Quantity(index) => format!("line_items[{index}].quantity"),
                _ => "line_items".to_owned(),
            };
            let message = error.to_string();
            return problem(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidRequest,
                &message,
                Some(&field),
            );
        }
    };
    // Each session costs a Stripe call, from the visitor's allowance. The merchant's back
    // end speaks for all its customers and limits them itself.
    if caller == Caller::Shop
        && let Some(client) = state.clients.client(&request)
        && let Err(wait) = state.clients.admit(client)
    {
        let mut refused = problem(
            StatusCode::TOO_MANY_REQUESTS,
            ProblemCode::RateLimited,
            "Too many checkouts from this client; try again shortly.",
            None,
        );
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
        return refused;
    }
    let has_email = cart.has_email();
    match opener
        .open(cart, state.checkout.ui == CheckoutUi::Embedded)
        .await
    {
        Ok(created) => HttpResponse::Created().json(CheckoutCreated {
            client_secret: created.client_secret.filter(|_| created.url.is_none()),
            expires_at: created.expires_at,
            id: created.id,
            url: created.url,
        }),
        // Stripe's lasting no. What the caller typed that Stripe checks beyond the
        // catalog is the email address; anything else is the shop's own configuration,
        // which the caller is not shown (the gateway logged it for the operator).
        Err(OpenError::Stripe(GatewayError::Refused(_))) if has_email => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::StripeRefused,
            "Stripe refused to create the session; it may not take this email address.",
            Some("email"),
        ),
        // The price asked for, named as the contract says, with what is left of it.
        Err(OpenError::SoldOut {
            name,
            price,
            available,
        }) => HttpResponse::Conflict().json(SoldOutError {
            error: SoldOut {
                available,
                code: ProblemCode::SoldOut,
                message: format!("{name} has {available} left, fewer than asked for."),
                price,
            },
        }),
        Err(error) => {
            tracing::warn!(error = %error, "could not create a Checkout Session for the API");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::Unavailable,
                "Checkout is unavailable just now; nothing was created. Try again shortly.",
                None,
            )
        }
    }
}

/// Who may open a checkout through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// The merchant's back end, with `API_TOKEN`.
    Merchant,
    /// A visitor on the storefront's own page, with its CSRF token.
    Shop,
}

/// Who `request` comes from, if it may open a checkout.
fn caller(request: &HttpRequest, state: &AppState) -> Option<Caller> {
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
        return same(token.expose(), given.trim()).then_some(Caller::Merchant);
    }
    let from_shop =
        header(header::ORIGIN.as_str()).is_some() && from_own_origin(request, &state.public_url);
    let cookie = request.cookie(CSRF_COOKIE);
    match (from_shop, cookie, header(CSRF_HEADER)) {
        (true, Some(cookie), Some(given)) => {
            (!cookie.value().is_empty() && same(cookie.value(), given)).then_some(Caller::Shop)
        }
        _ => None,
    }
}

/// Whether `request` comes from a page of `public_url`'s origin, or says nothing of its
/// origin (a client that is not a browser, or a browser's same-origin GET). Compared as
/// browsers write it: lowercase, without the scheme's default port.
pub fn from_own_origin(request: &HttpRequest, public_url: &str) -> bool {
    let Some(given) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let normal = |origin: &str| {
        let origin = origin.to_ascii_lowercase();
        origin
            .strip_suffix(":443")
            .filter(|_| origin.starts_with("https://"))
            .or_else(|| {
                origin
                    .strip_suffix(":80")
                    .filter(|_| origin.starts_with("http://"))
            })
            .map(str::to_owned)
            .unwrap_or(origin)
    };
    let after_scheme = public_url.find("://").map_or(0, |at| at + 3);
    let own = match public_url[after_scheme..].find('/') {
        Some(slash) => &public_url[..after_scheme + slash],
        None => public_url,
    };
    let Ok(given) = given.to_str() else {
        return false;
    };
    // Or the host the request was sent to, as the browser names it (the shop reached as
    // 127.0.0.1 rather than localhost, say): another site's page cannot make a browser
    // send its own origin to this host.
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let given = normal(given);
    given == normal(own)
        || host.is_some_and(|host| {
            given.split_once("://").map(|(_, authority)| authority)
                == Some(host.to_ascii_lowercase().as_str())
        })
}

/// The storefront's CSRF token for this visitor: the one its cookie holds, or a new one
/// with the cookie to set.
pub fn csrf_token(request: &HttpRequest, secure: bool) -> (String, Option<Cookie<'static>>) {
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
        .secure(secure)
        .finish();
    (token, Some(cookie))
}

/// Reads `{"line_items": [{"price", "quantity"}, …], "email"?}`, naming the first field
/// at fault.
fn parse(body: &[u8]) -> Result<NewCheckout, Invalid> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| invalid("body", format!("expected a JSON object: {error}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("body", "expected a JSON object"))?;
    only(object, "", &["line_items", "email"])?;
    let lines = object
        .get("line_items")
        .ok_or_else(|| invalid("line_items", "required"))?
        .as_array()
        .ok_or_else(|| invalid("line_items", "expected an array"))?;
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(invalid(
            "line_items",
            format!("expected 1 to {MAX_LINES} line items"),
        ));
    }
    let mut line_items = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let at = |name: &str| format!("line_items[{index}]{name}");
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
        line_items.push(NewCheckoutLine {
            price: price.to_owned(),
            quantity,
        });
    }
    let email = match object.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(email)) if email.len() <= MAX_TEXT && deliverable(email) => {
            Some(email.clone())
        }
        Some(_) => return Err(invalid("email", "expected an email address")),
    };
    Ok(NewCheckout { line_items, email })
}

/// Refuses a field `object` should not have.
fn only(object: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), Invalid> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) if at.is_empty() => Err(invalid(key.as_str(), "unknown field")),
        Some(key) => Err(invalid(format!("{at}.{key}"), "unknown field")),
        None => Ok(()),
    }
}

/// An address Stripe takes for `customer_email`: well formed, at a domain with a dot
/// (not `localhost`, not an address literal).
fn deliverable(email: &str) -> bool {
    let Ok(address) = email.parse::<lettre::Address>() else {
        return false;
    };
    let domain = address.domain();
    domain.contains('.') && !domain.starts_with('[') && !domain.ends_with('.')
}
