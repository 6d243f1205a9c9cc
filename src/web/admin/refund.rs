//! `POST /admin/sessions/{id}/refund`: what `fulfilld sessions refund` does, from a form.
//!
//! The first POST only checks the form and shows what would be refunded; the refund is
//! made by the second, from the confirmation's own button. Both carry the CSRF token. The
//! refund's idempotency key comes from what is refunded and the confirmation's nonce, so
//! a confirmation sent twice refunds once, and a new confirmation is a new refund.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::{AdminError, Operator, field, html, see_other};
use crate::domain::{SessionId, format_money, parse_amount};
use crate::refunding::{self, RefundAsk, RefundError};
use crate::stripe::GatewayError;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "admin/refund.html")]
struct RefundPage {
    csrf: Option<String>,
    id: String,
    /// What was typed, sent again by the confirmation.
    typed_amount: String,
    typed_items: String,
    /// The confirmation's own: the refund's idempotency key is made with it.
    nonce: String,
    /// What the refund will be, as the operator is asked to confirm it.
    confirm: Option<String>,
    /// Why it cannot be made.
    problem: Option<String>,
}

/// Checks the form, then shows what would be refunded, or makes the refund when the form
/// is the confirmation.
pub async fn refund(
    operator: Operator,
    path: web::Path<String>,
    form: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    operator.check_csrf(&form)?;
    let id = SessionId::parse(&path).map_err(AdminError::MalformedId)?;
    let outcome = state
        .db
        .outcome(&id)
        .await?
        .ok_or(AdminError::UnknownSession)?;
    let currency = outcome.currency.clone().unwrap_or_else(|| "usd".to_owned());
    let typed = |name| field(&form, name).unwrap_or_default().trim().to_owned();
    let (amount, items) = (typed("amount"), typed("items"));
    let mut page = RefundPage {
        csrf: Some(operator.csrf()),
        id: id.to_string(),
        typed_amount: amount.clone(),
        typed_items: items.clone(),
        nonce: String::new(),
        confirm: None,
        problem: None,
    };
    let minor = match (!amount.is_empty())
        .then(|| parse_amount(&amount, &currency))
        .transpose()
    {
        Ok(minor) => minor,
        Err(message) => return Ok(refused(page, format!("Amount: {message}"))),
    };
    if minor == Some(0) {
        return Ok(refused(page, "Amount: expected more than 0".to_owned()));
    }
    let ask = match RefundAsk::new(minor, Some(&items)).and_then(|ask| {
        ask.check(&outcome)?;
        Ok(ask)
    }) {
        Ok(ask) => ask,
        Err(error) => return Ok(refused(page, said(error))),
    };
    let nonce = field(&form, "nonce")
        .filter(|nonce| nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    let (Some("yes"), Some(nonce)) = (field(&form, "confirm").as_deref(), nonce) else {
        page.nonce = format!("{:032x}", fastrand::u128(..));
        let what = match minor {
            Some(minor) => format_money(minor, &currency, state.locale),
            None => outcome
                .amount_total
                .map(|total| format_money(total - outcome.amount_refunded, &currency, state.locale))
                .map_or_else(
                    || "what is left".to_owned(),
                    |left| format!("all {left} left"),
                ),
        };
        let of = if items.is_empty() {
            String::new()
        } else {
            format!(" for {items}")
        };
        page.confirm = Some(format!("Refund {what}{of} to the customer?"));
        return Ok(html(StatusCode::OK, &page));
    };
    let ask = ask.with_nonce(&nonce);
    match refunding::refund(&state.db, &state.stripe, &outcome, &ask).await {
        Ok(made) => {
            let made = made.refund.id;
            let made: String = url::form_urlencoded::byte_serialize(made.as_bytes()).collect();
            Ok(see_other(&format!(
                "/admin/sessions/{id}?notice=refund_made&id={made}"
            )))
        }
        Err(RefundError::Database(error)) => Err(AdminError::Unavailable(error)),
        Err(
            error @ RefundError::Stripe {
                error: GatewayError::Refused(_),
                ..
            },
        ) => Ok(refused(page, format!("{error}. Nothing was refunded."))),
        Err(error @ RefundError::Stripe { .. }) => {
            page.problem = Some(format!("{error}. Nothing was refunded; try again."));
            Ok(html(StatusCode::BAD_GATEWAY, &page))
        }
        Err(error) => Ok(refused(page, said(error))),
    }
}

/// The form again, with why it was refused.
fn refused(mut page: RefundPage, problem: String) -> HttpResponse {
    page.problem = Some(problem);
    html(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// `error` as the form's words: the field capitalised, as the form labels it.
fn said(error: RefundError) -> String {
    match error {
        RefundError::Invalid { field, message } => {
            let mut label = field.to_owned();
            label[..1].make_ascii_uppercase();
            format!("{label}: {message}")
        }
        error => error.to_string(),
    }
}
