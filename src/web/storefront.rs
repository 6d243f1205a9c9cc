//! `GET /` and `POST /checkout`: a small shop made from the catalog. Buying creates a
//! Checkout Session (at Stripe, or at the sandbox's simulator) and sends the customer to it.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::AppState;
use crate::catalog::Kind;
use crate::domain::format_amount;
use crate::stripe::listing::NewCheckout;

/// The most of one product a single checkout buys.
const MAX_QUANTITY: u64 = 20;

struct ProductView {
    price: String,
    name: String,
    amount: String,
    digital: bool,
    /// Physical goods only: what is left (never below zero for customers).
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
}

#[derive(Debug, Deserialize)]
pub struct BuyForm {
    price: String,
    quantity: String,
}

pub async fn index(state: web::Data<AppState>) -> HttpResponse {
    shop_page(&state, StatusCode::OK, None).await
}

pub async fn checkout(
    request: HttpRequest,
    form: web::Form<BuyForm>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(product) = state
        .catalog
        .products()
        .iter()
        .find(|p| p.price == form.price)
    else {
        return shop_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("That product is not in the shop."),
        )
        .await;
    };
    let quantity = match form.quantity.trim().parse::<u64>() {
        Ok(quantity) if (1..=MAX_QUANTITY).contains(&quantity) => quantity,
        _ => {
            return shop_page(
                &state,
                StatusCode::BAD_REQUEST,
                Some("Choose a quantity from 1 to 20."),
            )
            .await;
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
    let new = NewCheckout {
        items: vec![(product.price.clone(), quantity)],
        collect_shipping: product.kind == Kind::Physical,
        success_url: format!(
            "{}/after-checkout?session_id={{CHECKOUT_SESSION_ID}}",
            state.public_url
        ),
        cancel_url: format!("{}/", state.public_url),
    };
    match state.stripe.create_checkout_session(&new).await {
        Ok(url) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url))
            .finish(),
        Err(error) => {
            tracing::warn!(error = %error, "could not create a Checkout Session");
            shop_page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Checkout is unavailable just now. Nothing was charged; please try again in a minute."),
            )
            .await
        }
    }
}

async fn shop_page(state: &AppState, status: StatusCode, problem: Option<&str>) -> HttpResponse {
    let mut products = Vec::with_capacity(state.catalog.products().len());
    for product in state.catalog.products() {
        let stock = match product.kind {
            Kind::Physical => state
                .db
                .stock(&product.sku)
                .await
                .ok()
                .flatten()
                .map(|(stock, _)| stock.max(0)),
            Kind::Digital => None,
        };
        products.push(ProductView {
            price: product.price.clone(),
            name: product.name.clone().unwrap_or_else(|| product.sku.clone()),
            amount: product
                .unit_amount
                .map(|amount| format_amount(amount, &product.currency))
                .unwrap_or_default(),
            digital: product.kind == Kind::Digital,
            stock,
        });
    }
    let page = ShopPage {
        shop: &state.shop,
        sandbox: state.sandbox,
        products,
        max_quantity: MAX_QUANTITY,
        problem,
    };
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(error) => {
            tracing::error!(error = %error, "could not render the shop");
            HttpResponse::InternalServerError().finish()
        }
    }
}
