//! The JSON of `POST /api/checkout-sessions`: what it reads, and every answer it gives.
//! The answers' fields are in alphabetical order, the order they have always had on the
//! wire.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::checkout::Cart;

/// A cart to open a Checkout Session for. Unknown fields are refused, and an error names
/// the first field at fault.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCheckout {
    #[schema(min_items = 1, max_items = 20)]
    pub line_items: Vec<NewCheckoutLine>,
    /// Prefills Checkout's email field.
    pub email: Option<String>,
}

impl NewCheckout {
    /// The cart to check against the catalog.
    pub fn into_cart(self) -> Cart {
        Cart {
            lines: self
                .line_items
                .into_iter()
                .map(|line| (line.price, line.quantity))
                .collect(),
            email: self.email,
        }
    }
}

/// One line of a new cart.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCheckoutLine {
    /// A Stripe Price id from the catalog.
    pub price: String,
    #[schema(minimum = 1)]
    pub quantity: u64,
}

/// A Checkout Session opened: where to send the customer (`url`, hosted) or what to mount
/// Stripe's embedded form with (`client_secret`, `CHECKOUT_UI=embedded`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutCreated {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// When Stripe expires the session and its stock is released, in seconds since the
    /// Unix epoch.
    pub expires_at: i64,
    /// The Checkout Session's id (`cs_…`).
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What kind of error an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// 400: the request is malformed; `field` names what is wrong.
    InvalidRequest,
    /// 401: neither `API_TOKEN` nor the shop's CSRF token was shown.
    Unauthorized,
    /// 409: fewer left than asked for.
    SoldOut,
    /// 413: the body is over 16 KiB.
    TooLarge,
    /// 422: Stripe refused the session, for the email address given.
    StripeRefused,
    /// 429: a visitor asked for too many sessions; see `Retry-After`.
    RateLimited,
    /// 503: Stripe or the database could not be reached; nothing was created.
    Unavailable,
}

/// An error answer: `{"error": {"code", "field"?, "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub error: ApiProblem,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiProblem {
    pub code: ProblemCode,
    /// The request's field at fault, e.g. `line_items[0].quantity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a person to read.
    pub message: String,
}

/// The answer to a cart asking for more than is left: `{"error": {"code": "sold_out", …}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SoldOutError {
    pub error: SoldOut,
}

/// Which price is sold out, and how many are left of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SoldOut {
    /// How many are left.
    pub available: i64,
    /// Always `sold_out`.
    pub code: ProblemCode,
    pub message: String,
    /// The Stripe Price id asked for.
    pub price: String,
}

/// An error answer with `status`.
pub fn problem(
    status: StatusCode,
    code: ProblemCode,
    message: &str,
    field: Option<&str>,
) -> HttpResponse {
    HttpResponse::build(status).json(ApiError {
        error: ApiProblem {
            code,
            field: field.map(str::to_owned),
            message: message.to_owned(),
        },
    })
}
