//! The hosted checkout page: the customer pays (or abandons the checkout) here, the
//! simulator sends the signed webhooks Stripe would, and the browser goes on to
//! `success_url` or `cancel_url`.

use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::Value;

use super::state::{EventRecord, Shared, State};
use super::{objects, refunds};
use crate::domain::{ItemLine, format_amount};
use crate::stripe::signature::signature_header;

/// Stripe retries a failed delivery for days; the sandbox compresses that into a minute.
const REDELIVERY_DELAYS_SECS: [u64; 6] = [1, 2, 4, 8, 16, 32];

#[derive(Template)]
#[template(path = "sandbox/checkout.html")]
struct CheckoutPage {
    id: String,
    action: String,
    status: String,
    lines: Vec<ItemLine>,
    total: String,
    email: String,
    collect_shipping: bool,
    /// Mounted in the merchant's page: its forms lead the whole page on.
    embedded: bool,
    delay_secs: u64,
    problem: Option<&'static str>,
}

/// What the customer submits.
#[derive(Debug, Deserialize)]
pub(super) struct Payment {
    method: String,
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    line1: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    postal_code: String,
    #[serde(default)]
    country: String,
}

fn page(shared: &Shared, id: &str, problem: Option<&'static str>) -> HttpResponse {
    let state = shared.lock();
    let Some(spec) = state.sessions.get(id) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("No such Checkout Session in the sandbox.");
    };
    let view = CheckoutPage {
        id: id.to_owned(),
        action: format!("{}/checkout/{id}", state.hosted),
        status: spec.status.clone(),
        lines: spec
            .items
            .iter()
            .map(|item| ItemLine {
                description: item.description.clone(),
                quantity: i64::try_from(item.quantity).unwrap_or(i64::MAX),
                amount: format_amount(item.amount_total(), &spec.currency),
            })
            .collect(),
        total: format_amount(spec.amount_total(), &spec.currency),
        email: spec
            .email
            .clone()
            .unwrap_or_else(|| "jenny.rosen@example.com".into()),
        collect_shipping: spec.collect_shipping,
        embedded: spec.embedded(),
        delay_secs: state.payment_delay.as_secs(),
        problem,
    };
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    match view.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

pub(super) async fn show(path: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    page(&shared, &path, None)
}

pub(super) async fn pay(
    path: web::Path<String>,
    form: web::Form<Payment>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let id = path.into_inner();
    let payment = form.into_inner();
    let delayed = match payment.method.as_str() {
        "card" => None,
        "debit_succeeds" => Some(true),
        "debit_fails" => Some(false),
        _ => return page(&shared, &id, Some("Choose a way to pay.")),
    };
    let redirect = {
        let mut state = shared.lock();
        let Some(spec) = state.sessions.get_mut(&id) else {
            drop(state);
            return page(&shared, &id, None);
        };
        if spec.status != "open" {
            drop(state);
            return page(&shared, &id, Some("This checkout is no longer open."));
        }
        if !payment.email.contains('@') {
            drop(state);
            return page(
                &shared,
                &id,
                Some("Enter an email address for the receipt."),
            );
        }
        if spec.collect_shipping {
            let fields = [
                &payment.name,
                &payment.line1,
                &payment.city,
                &payment.postal_code,
                &payment.country,
            ];
            if fields.iter().any(|field| field.trim().is_empty()) {
                drop(state);
                return page(&shared, &id, Some("Enter the whole shipping address."));
            }
            spec.shipping_details = Some(objects::shipping_details(
                payment.name.trim(),
                payment.line1.trim(),
                payment.city.trim(),
                payment.postal_code.trim(),
                payment.country.trim(),
            ));
        }
        spec.status = "complete".into();
        spec.payment_status = if delayed.is_some() { "unpaid" } else { "paid" }.into();
        spec.email = Some(payment.email.trim().to_owned());
        spec.success_url
            .as_deref()
            .or(spec.return_url.as_deref())
            .map(|url| url.replace("{CHECKOUT_SESSION_ID}", &id))
    };
    // Stripe sends the customer on only once the endpoint has answered (or timed out).
    emit(&shared, "checkout.session.completed", &id).await;
    if let Some(succeeds) = delayed {
        let shared = Shared::clone(&shared);
        let id = id.clone();
        tokio::spawn(async move {
            let delay = shared.lock().payment_delay;
            tokio::time::sleep(delay).await;
            let event_type = if succeeds {
                if let Some(spec) = shared.lock().sessions.get_mut(&id) {
                    spec.payment_status = "paid".into();
                }
                "checkout.session.async_payment_succeeded"
            } else {
                "checkout.session.async_payment_failed"
            };
            emit(&shared, event_type, &id).await;
        });
    }
    see_other(redirect.as_deref().unwrap_or("/"))
}

/// The sandbox's stand-in for Stripe.js, which the storefront loads in embedded mode.
pub(super) async fn stripe_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(include_str!("../../templates/sandbox/stripe.js"))
}

pub(super) async fn expire(path: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let id = path.into_inner();
    let cancel = {
        let mut state = shared.lock();
        match state.sessions.get_mut(&id) {
            Some(spec) if spec.status == "open" => {
                spec.status = "expired".into();
                spec.cancel_url.clone()
            }
            _ => {
                drop(state);
                return page(&shared, &id, Some("This checkout is no longer open."));
            }
        }
    };
    emit(&shared, "checkout.session.expired", &id).await;
    see_other(cancel.as_deref().unwrap_or("/"))
}

/// The sandbox's refund button: refunds the rest of session `id`'s payment, as the
/// Dashboard would, and sends the customer back to their order. Only from the sandbox's
/// own pages: a form posted from another site is refused.
pub(super) async fn refund(
    request: HttpRequest,
    path: web::Path<String>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let id = path.into_inner();
    if !same_site(&request, &shared) {
        return HttpResponse::Forbidden().body("The sandbox refunds only from its own pages.");
    }
    let back = shared.lock().sessions.get(&id).and_then(|spec| {
        spec.success_url
            .as_deref()
            .map(|url| url.replace("{CHECKOUT_SESSION_ID}", &id))
    });
    let payment_intent = objects::payment_intent_of(&id);
    if let Err(error) = refunds::refund(&shared, &payment_intent, None, None, None).await {
        tracing::info!(%error, "the sandbox refused a refund");
    }
    see_other(back.as_deref().unwrap_or("/"))
}

/// Whether a form was posted from the sandbox's own pages: a form posted from another
/// site (its `Origin` elsewhere) is not.
pub(super) fn same_site(request: &HttpRequest, shared: &Shared) -> bool {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    let hosted = shared.lock().hosted.clone();
    origin.is_none_or(|origin| {
        hosted
            .strip_prefix(origin)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

pub(super) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Records an event about session `id` and delivers it, signed; the first attempt is
/// awaited, redeliveries run in the background. Returns the event's id.
pub(super) async fn emit(shared: &Shared, event_type: &str, id: &str) -> String {
    emit_with(shared, event_type, |state, event_id, created| {
        state.event_body(event_id, event_type, id, created)
    })
    .await
}

/// Records an event of `event_type` carrying `object` and delivers it like Stripe.
pub(super) async fn emit_object(shared: &Shared, event_type: &str, object: Value) -> String {
    emit_with(shared, event_type, |_, event_id, created| {
        objects::event(event_id, event_type, object, created).to_string()
    })
    .await
}

async fn emit_with(
    shared: &Shared,
    event_type: &str,
    body: impl FnOnce(&State, &str, i64) -> String,
) -> String {
    let (event_id, body, target) = {
        let mut state = shared.lock();
        let event_id = state.new_id("evt_");
        let created = crate::db::now_ms() / 1000;
        let body = body(&state, &event_id, created);
        state.events.push(EventRecord {
            id: event_id.clone(),
            event_type: event_type.to_owned(),
            created,
            account: serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|event| event["account"].as_str().map(str::to_owned)),
            body: body.clone(),
            delivered: false,
        });
        let target = state.webhooks.clone().filter(|_| !state.drop_webhooks);
        (event_id, body, target)
    };
    let Some(target) = target else {
        return event_id;
    };
    if deliver(shared, &target.url, &target.secret, &body).await {
        mark_delivered(shared, &event_id);
        return event_id;
    }
    let shared = Shared::clone(shared);
    let returned = event_id.clone();
    tokio::spawn(async move {
        for delay in REDELIVERY_DELAYS_SECS {
            tokio::time::sleep(Duration::from_secs(delay)).await;
            if deliver(&shared, &target.url, &target.secret, &body).await {
                mark_delivered(&shared, &event_id);
                return;
            }
        }
        tracing::warn!(event.id = %event_id, "sandbox gave up delivering an event; `fulfilld reconcile` finds it");
    });
    returned
}

async fn deliver(shared: &Shared, url: &str, secret: &str, body: &str) -> bool {
    let signature = signature_header(secret, crate::db::now_ms() / 1000, body.as_bytes());
    shared
        .client
        .post(url)
        .header(header::CONTENT_TYPE.as_str(), "application/json")
        .header("Stripe-Signature", signature)
        .timeout(Duration::from_secs(10))
        .body(body.to_owned())
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

fn mark_delivered(shared: &Shared, event_id: &str) {
    if let Some(event) = shared.lock().events.iter_mut().find(|e| e.id == event_id) {
        event.delivered = true;
    }
}
