//! `GET /` and `POST /checkout`: a small shop made from the catalog. Buying creates a
//! Checkout Session (at Stripe, or at the sandbox's simulator) and sends the customer to it.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::AppState;
use super::api::{csrf_token, from_own_origin};
use crate::catalog::Kind;
use crate::checkout::{Cart, MAX_QUANTITY, OpenError};
use crate::configuration::CheckoutUi;
use crate::domain::format_money;
use crate::stripe::listing::CreatedCheckout;

struct ProductView {
    price: String,
    name: String,
    amount: String,
    digital: bool,
    /// Physical goods only: what a new checkout may still take (never below zero).
    stock: Option<i64>,
}

#[derive(Template)]
#[template(path = "shop/index.html")]
struct ShopPage<'a> {
    shop: &'a str,
    sandbox: bool,
    products: Vec<ProductView>,
    max_quantity: u64,
    problem: Option<&'a str>,
    /// Repeated by the page's scripts to `POST /api/checkout-sessions`.
    csrf: &'a str,
    /// `CHECKOUT_UI=embedded`: the Buy buttons mount Stripe's form in the page.
    embedded: bool,
    stripe_js: String,
    publishable_key: &'a str,
}

/// The sandbox's stand-in for Stripe.js.
const SANDBOX_STRIPE_JS: &str = "/sandbox/stripe.js";

/// Stripe.js of the release this build pins its API version to (`2026-09-30.endive`:
/// `https://js.stripe.com/endive/stripe.js`).
fn stripe_js() -> String {
    let release = crate::stripe::pinned_api_version()
        .rsplit('.')
        .next()
        .unwrap_or("v3");
    format!("https://js.stripe.com/{release}/stripe.js")
}

#[derive(Debug, Deserialize)]
pub struct BuyForm {
    price: String,
    quantity: String,
}

pub async fn index(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    shop_page(&request, &state, StatusCode::OK, None).await
}

pub async fn checkout(
    request: HttpRequest,
    form: web::Form<BuyForm>,
    state: web::Data<AppState>,
) -> HttpResponse {
    // A form another site's page posted: refused before it costs anything. Browsers name
    // the page's origin on every cross-site POST.
    if !from_own_origin(&request, &state.public_url) {
        return shop_page(
            &request,
            &state,
            StatusCode::FORBIDDEN,
            Some("Please start your checkout from this shop's own page."),
        )
        .await;
    }
    let quantity = form.quantity.trim().parse::<u64>().unwrap_or(0);
    let opener = state.opener();
    let cart = match opener.check(Cart {
        lines: vec![(form.price.clone(), quantity)],
        email: None,
    }) {
        Ok(cart) => cart,
        Err(OpenError::UnknownPrice(..)) => {
            let problem = "That product is not in the shop.";
            return shop_page(&request, &state, StatusCode::BAD_REQUEST, Some(problem)).await;
        }
        Err(_) => {
            let problem = format!("Choose a quantity from 1 to {MAX_QUANTITY}.");
            return shop_page(&request, &state, StatusCode::BAD_REQUEST, Some(&problem)).await;
        }
    };
    // A session costs a Stripe call, from the same allowance as a lookup: a bot cannot
    // spend the customers' share on sessions nobody pays.
    // The answer past it costs nothing either: no stock is read for it.
    if let Some(client) = state.clients.client(&request)
        && let Err(wait) = state.clients.admit(client)
    {
        return HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, wait.as_secs().max(1)))
            .content_type("text/plain; charset=utf-8")
            .body(
                "This address has started many checkouts in a short time; please wait a \
                 moment and go back to the shop.\n",
            );
    }
    // Hosted, whatever CHECKOUT_UI says: this is the form without scripts, and only
    // a script can mount the embedded form.
    match opener.open(cart, false).await {
        Ok(CreatedCheckout { url: Some(url), .. }) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url))
            .finish(),
        Ok(_) => unreachable_session(&request, &state).await,
        Err(OpenError::SoldOut {
            name, available, ..
        }) => {
            let problem = match available {
                0 => format!("Sorry, {name} is sold out."),
                left => format!("Sorry, only {left} of {name} are left."),
            };
            shop_page(&request, &state, StatusCode::CONFLICT, Some(&problem)).await
        }
        Err(error) => {
            tracing::warn!(error = %error, "could not create a Checkout Session");
            unreachable_session(&request, &state).await
        }
    }
}

/// The shop again, saying checkout cannot be reached.
async fn unreachable_session(request: &HttpRequest, state: &AppState) -> HttpResponse {
    let problem =
        "Checkout is unavailable just now. Nothing was charged; please try again in a minute.";
    shop_page(
        request,
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        Some(problem),
    )
    .await
}

async fn shop_page(
    request: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    problem: Option<&str>,
) -> HttpResponse {
    let mut products = Vec::with_capacity(state.catalog.products().len());
    for product in state.catalog.products() {
        let stock = match product.kind {
            Kind::Physical => state
                .db
                .available(&product.sku)
                .await
                .ok()
                .map(|available| available.max(0)),
            Kind::Digital => None,
        };
        products.push(ProductView {
            price: product.price.clone(),
            name: product.display_name(),
            amount: product
                .unit_amount
                .map(|amount| format_money(amount, &product.currency, state.locale))
                .unwrap_or_default(),
            digital: product.kind == Kind::Digital,
            stock,
        });
    }
    let (csrf, cookie) = csrf_token(request, state.public_url.starts_with("https:"));
    let page = ShopPage {
        shop: &state.shop,
        sandbox: state.sandbox,
        products,
        max_quantity: MAX_QUANTITY,
        problem,
        csrf: &csrf,
        embedded: state.checkout.ui == CheckoutUi::Embedded,
        stripe_js: if state.sandbox {
            SANDBOX_STRIPE_JS.to_owned()
        } else {
            stripe_js()
        },
        publishable_key: state
            .checkout
            .publishable_key
            .as_deref()
            .unwrap_or_default(),
    };
    match page.render() {
        Ok(body) => {
            let mut response = HttpResponse::build(status);
            if let Some(cookie) = cookie {
                response.cookie(cookie);
            }
            response.content_type("text/html; charset=utf-8").body(body)
        }
        Err(error) => {
            tracing::error!(error = %error, "could not render the shop");
            HttpResponse::InternalServerError().finish()
        }
    }
}
