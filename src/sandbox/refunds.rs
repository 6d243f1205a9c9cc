//! `POST /v1/refunds`: the simulator refunds a completed session's payment, at once and
//! in full or in part, and tells of it as Stripe does, with `refund.created` and
//! `charge.refunded`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::api::{ApiError, admit, param, stripe_error};
use super::hosted::emit_object;
use super::objects;
use super::state::Shared;

/// A refund the simulator made.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub payment_intent: String,
    pub amount: i64,
    /// The `Idempotency-Key` it was created with, if any.
    pub key: Option<String>,
    /// The refund object, as answered.
    pub object: Value,
}

/// `POST /v1/refunds` with `payment_intent`, and optionally `amount` (the rest of the
/// payment when left out) and `metadata[items]`. A repeat with the same `Idempotency-Key`
/// answers the same refund and refunds nothing more.
pub(super) async fn create_refund(
    request: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    admit(&request, &shared, None).await?;
    let form = form.into_inner();
    let key = request
        .headers()
        .get("Idempotency-Key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let Some(payment_intent) = param(&form, "payment_intent") else {
        return Err(invalid(
            "parameter_missing",
            "Missing required param: payment_intent.",
        ));
    };
    let amount = match param(&form, "amount") {
        None => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(amount) if amount > 0 => Some(amount),
            _ => {
                return Err(invalid(
                    "parameter_invalid_integer",
                    "Invalid integer: amount.",
                ));
            }
        },
    };
    let object = refund(
        &shared,
        payment_intent,
        amount,
        param(&form, "metadata[items]"),
        key,
    )
    .await?;
    Ok(HttpResponse::Ok().json(object))
}

fn invalid(code: &'static str, message: &str) -> ApiError {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some(code),
        message,
    )
}

/// Refunds `amount` (the rest when `None`) of a completed session's `payment_intent`,
/// at once, and tells of it with `refund.created` and `charge.refunded`; answers the
/// refund object.
pub(super) async fn refund(
    shared: &Shared,
    payment_intent: &str,
    amount: Option<i64>,
    items: Option<&str>,
    key: Option<String>,
) -> Result<Value, ApiError> {
    let (object, charge) = {
        let mut state = shared.lock();
        // The same key answers the same refund, and refunds nothing more.
        if let Some(key) = &key
            && let Some(done) = state.refunds.iter().find(|r| r.key.as_ref() == Some(key))
        {
            return Ok(done.object.clone());
        }
        // A payment intent is its session's id with another prefix.
        let suffix = payment_intent.trim_start_matches("pi_");
        let Some((amount_paid, currency)) = ["cs_test_", "cs_live_"]
            .into_iter()
            .filter_map(|prefix| state.sessions.get(&format!("{prefix}{suffix}")))
            .find(|spec| spec.status == "complete")
            .map(|spec| (spec.amount_total(), spec.currency.clone()))
        else {
            return Err(stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such payment_intent: '{payment_intent}'"),
            ));
        };
        let refunded: i64 = state
            .refunds
            .iter()
            .filter(|r| r.payment_intent == payment_intent)
            .map(|r| r.amount)
            .sum();
        let left = amount_paid - refunded;
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(invalid(
                "charge_already_refunded",
                &format!("Refund amount ({amount}) is greater than what is left ({left})."),
            ));
        }
        let id = state.new_id("re_");
        let created = crate::db::now_ms() / 1000;
        let object = objects::refund(
            &id,
            payment_intent,
            amount,
            &currency,
            "succeeded",
            items,
            created,
        );
        let charge = objects::refunded_charge(
            payment_intent,
            amount_paid,
            refunded + amount,
            &currency,
            created,
        );
        state.refunds.push(RefundRecord {
            payment_intent: payment_intent.to_owned(),
            amount,
            key,
            object: object.clone(),
        });
        (object, charge)
    };
    emit_object(shared, "refund.created", object.clone()).await;
    emit_object(shared, "charge.refunded", charge).await;
    Ok(object)
}
