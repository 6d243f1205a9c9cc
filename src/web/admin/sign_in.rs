//! `GET`/`POST /admin/login` and `POST /admin/logout`.

use std::time::Instant;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use super::{AdminError, Operator, field, html, see_other};
use crate::db::now_ms;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "admin/login.html")]
struct SignInPage {
    problem: Option<String>,
    csrf: Option<String>,
}

fn sign_in_page(status: StatusCode, problem: Option<String>) -> HttpResponse {
    html(
        status,
        &SignInPage {
            problem,
            csrf: None,
        },
    )
}

/// The sign-in form, or the sessions for an operator already signed in.
pub async fn form(request: HttpRequest) -> HttpResponse {
    match super::operator(&request).await {
        Ok(_) => see_other("/admin"),
        Err(_) => sign_in_page(StatusCode::OK, None),
    }
}

/// Checks the token (unless this client has failed too often) and sets the cookie.
pub async fn sign_in(
    request: HttpRequest,
    form: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let admin = state.admin.as_ref().ok_or(AdminError::Disabled)?;
    let client = state.clients.client(&request);
    let now = Instant::now();
    if let Some(wait) = admin.throttle.refused(client, now) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let mut page = sign_in_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!(
                "Too many failed sign-ins. Try again in {minutes} minutes."
            )),
        );
        page.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(wait.as_secs().max(1)),
        );
        return Ok(page);
    }
    let token = field(&form, "token").unwrap_or_default();
    if !admin.auth.token_matches(&token) {
        admin.throttle.fail(client, now);
        tracing::warn!(client = ?client, "failed sign-in to /admin");
        return Ok(sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token.".to_owned()),
        ));
    }
    let signed_in = admin.auth.sign_in(now_ms())?;
    state
        .db
        .store_admin_session(
            &signed_in.id,
            admin.auth.token_digest(),
            &signed_in.csrf,
            signed_in.expires_at,
        )
        .await?;
    tracing::info!(client = ?client, "operator signed in to /admin");
    let mut response = see_other("/admin");
    response.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::try_from(admin.auth.set_cookie(&signed_in.cookie))
            .map_err(|error| anyhow::anyhow!("unusable cookie header: {error}"))?,
    );
    Ok(response)
}

/// Ends the sign-in on every replica and forgets the cookie in this browser; a new
/// `ADMIN_TOKEN` ends every sign-in at once.
pub async fn sign_out(
    operator: Operator,
    form: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    operator.check_csrf(&form)?;
    state.db.end_admin_session(&operator.session).await?;
    tracing::info!("operator signed out of /admin");
    let mut response = see_other("/admin/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::try_from(operator.admin.auth.clear_cookie())
            .map_err(|error| anyhow::anyhow!("unusable cookie header: {error}"))?,
    );
    Ok(response)
}
