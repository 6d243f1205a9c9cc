//! `POST /v1/checkout/sessions`: the simulator's sessions, created as Stripe creates them.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::api::{ApiError, admit, param, stripe_error};
use super::objects::ItemSpec;
use super::state::{DEFAULT_EXPIRY_SECS, SessionSpec, Shared};

/// `POST /v1/checkout/sessions`: prices come from the catalog, as Stripe's come from the
/// merchant's account.
pub(super) async fn create_session(
    request: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, ApiError> {
    admit(&request, &shared, None).await?;
    let form = form.into_inner();
    let mut state = shared.lock();
    let mut items = Vec::new();
    let mut currency = None;
    for index in 0.. {
        let Some(price) = param(&form, &format!("line_items[{index}][price]")) else {
            break;
        };
        let quantity = param(&form, &format!("line_items[{index}][quantity]"))
            .and_then(|raw| raw.parse::<u64>().ok())
            .unwrap_or(1);
        let Some(product) = state.catalog.by_price(price) else {
            return Err(stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such price: '{price}'"),
            ));
        };
        currency.get_or_insert_with(|| product.currency.clone());
        items.push(ItemSpec {
            description: product.display_name(),
            price_id: product.price.clone(),
            unit_amount: product.unit_amount.unwrap_or(0),
            quantity,
        });
    }
    if items.is_empty() || param(&form, "mode") != Some("payment") {
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_missing"),
            "The sandbox creates sessions with mode=payment and at least one line item.",
        ));
    }
    let success_url = param(&form, "success_url").map(str::to_owned);
    let cancel_url = param(&form, "cancel_url").map(str::to_owned);
    let return_url = param(&form, "return_url").map(str::to_owned);
    // Both spellings: API 2026-03-25.dahlia renamed `embedded` to `embedded_page`.
    let ui_mode = param(&form, "ui_mode").map(str::to_owned);
    let embedded = match ui_mode.as_deref() {
        None | Some("hosted" | "hosted_page") => false,
        Some("embedded" | "embedded_page") => true,
        Some(other) => {
            return Err(stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &format!("Invalid ui_mode: {other}"),
            ));
        }
    };
    let urls_fit = match embedded {
        true => return_url.is_some() && success_url.is_none() && cancel_url.is_none(),
        false => return_url.is_none(),
    };
    if !urls_fit {
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "An embedded session takes a return_url and no success_url or cancel_url; a \
             hosted one takes no return_url.",
        ));
    }
    if let Some(base) = &state.redirects_under
        && let Some(url) = [&success_url, &cancel_url, &return_url]
            .into_iter()
            .flatten()
            .find(|url| !is_under(url, base))
    {
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("url_invalid"),
            &format!("The sandbox sends customers only to URLs under {base}, not to {url}."),
        ));
    }
    let created = crate::db::now_ms() / 1000;
    let expires_at = match param(&form, "expires_at").map(str::parse::<i64>) {
        None => created + DEFAULT_EXPIRY_SECS,
        Some(Ok(at)) if (created + 1800..=created + DEFAULT_EXPIRY_SECS).contains(&at) => at,
        Some(_) => {
            return Err(stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from \
                 Checkout Session creation.",
            ));
        }
    };
    let metadata = form
        .iter()
        .filter_map(|(key, value)| {
            let key = key.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((key.to_owned(), Value::String(value.clone())))
        })
        .collect();
    let spec = SessionSpec {
        status: "open".into(),
        payment_status: "unpaid".into(),
        currency: currency.unwrap_or_else(|| "usd".into()),
        email: param(&form, "customer_email").map(str::to_owned),
        items,
        shipping_details: None,
        collect_shipping: form
            .iter()
            .any(|(key, _)| key.starts_with("shipping_address_collection")),
        success_url,
        cancel_url,
        created,
        expires_at,
        metadata,
        account: None,
        return_url,
        ui_mode,
        client_secret: None,
    };
    let id = state.new_id("cs_test_");
    let mut spec = spec;
    if embedded {
        spec.client_secret = Some(format!("{id}_secret_{:024x}", fastrand::u128(..)));
    }
    let session = spec.to_json(&id, &state.hosted);
    state.sessions.insert(id, spec);
    Ok(HttpResponse::Ok().json(session))
}

/// Whether `url` is `base` or a path, query or fragment below it (not merely a host whose
/// name starts with it).
fn is_under(url: &str, base: &str) -> bool {
    url.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']))
}
