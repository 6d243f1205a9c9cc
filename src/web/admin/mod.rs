//! `/admin`: the operators' page. Recent sessions and search, one session's timeline, the
//! dead effects and events with a retry button each, the stock, and a refund form.
//!
//! It exists only when `ADMIN_TOKEN` is set; otherwise every `/admin` path is a 404. An
//! operator signs in with the token and gets a random cookie whose sign-in is stored
//! ([`auth`]); every change is a POST carrying the sign-in's CSRF token. Pages are plain HTML without
//! scripts, never cached, never framed.

mod auth;
mod pages;
mod refund;
mod retry;
mod sign_in;
mod throttle;
mod views;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use askama::Template;
use futures_util::future::LocalBoxFuture;

use super::AppState;
use crate::configuration::Secret;
use auth::AdminAuth;
use throttle::SignInThrottle;

/// What every admin response carries: never stored, never framed, no script, forms only
/// to this site, no address leaked to links.
const HEADERS: [(&str, &str); 5] = [
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
];

/// The admin page's keys and sign-in counts, present when `ADMIN_TOKEN` is set.
pub struct Admin {
    auth: AdminAuth,
    throttle: SignInThrottle,
}

impl Admin {
    /// Signs operators in with `token`; cookies are `Secure` when `public_url` is https.
    pub fn new(token: Secret, public_url: &str) -> Arc<Self> {
        Arc::new(Self {
            auth: AdminAuth::new(token, public_url.starts_with("https://")),
            throttle: SignInThrottle::default(),
        })
    }
}

/// Registers `/admin` and everything under it.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .wrap(from_fn(gate))
            .route("", web::get().to(pages::sessions))
            .route("", web::post().to(pages::search))
            .service(
                web::resource("/login")
                    .route(web::get().to(sign_in::form))
                    .route(web::post().to(sign_in::sign_in)),
            )
            .route("/logout", web::post().to(sign_in::sign_out))
            .route("/sessions/{id}", web::get().to(pages::timeline))
            .route("/sessions/{id}/refund", web::post().to(refund::refund))
            .route("/dead", web::get().to(pages::dead))
            .route("/stock", web::get().to(pages::stock))
            .route("/effects/{id}/retry", web::post().to(retry::effect))
            .route("/events/{id}/retry", web::post().to(retry::event)),
    );
}

/// Answers 404 to everything under `/admin` when the page is off, before any route is
/// matched; otherwise adds [`HEADERS`] to every answer.
async fn gate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let enabled = request
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.admin.is_some());
    if !enabled {
        let response = HttpResponse::NotFound().finish();
        return Ok(request.into_response(response).map_into_right_body());
    }
    let mut response = next.call(request).await?;
    for (name, value) in HEADERS {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Ok(response.map_into_left_body())
}

/// A signed-in operator: extracting one refuses a request without a valid cookie (a page
/// sends the browser to sign in; a form gets 403).
pub struct Operator {
    admin: Arc<Admin>,
    /// What the sign-in is stored under.
    session: String,
    csrf: String,
}

impl Operator {
    /// The CSRF token for this operator's forms.
    fn csrf(&self) -> String {
        self.csrf.clone()
    }

    /// Refuses a form whose `csrf` field is missing or not this operator's, before it
    /// changes anything.
    fn check_csrf(&self, form: &[u8]) -> Result<(), AdminError> {
        let given = field(form, "csrf").unwrap_or_default();
        if auth::csrf_matches(&self.csrf, &given) {
            Ok(())
        } else {
            tracing::warn!("admin form refused: missing or wrong CSRF token");
            Err(AdminError::Forbidden)
        }
    }
}

impl FromRequest for Operator {
    type Error = AdminError;
    type Future = LocalBoxFuture<'static, Result<Self, AdminError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { operator(&request).await })
    }
}

/// The operator whose cookie `request` carries, if its sign-in is stored, unexpired and
/// made with the current `ADMIN_TOKEN`.
async fn operator(request: &HttpRequest) -> Result<Operator, AdminError> {
    let state = request
        .app_data::<web::Data<AppState>>()
        .ok_or(AdminError::Disabled)?;
    let admin = state.admin.clone().ok_or(AdminError::Disabled)?;
    for cookie in auth::cookies(request) {
        let session = auth::session_id(&cookie);
        if let Some(csrf) = state
            .db
            .admin_session(&session, admin.auth.token_digest())
            .await?
        {
            return Ok(Operator {
                admin,
                session,
                csrf,
            });
        }
    }
    Err(if request.method() == Method::GET {
        AdminError::SignInFirst
    } else {
        AdminError::Forbidden
    })
}

/// The value of `name` in a URL-encoded form body.
fn field(form: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(form)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Why an admin request was not answered with its page.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the admin page is off")]
    Disabled,
    #[error("sign in first")]
    SignInFirst,
    #[error("This form has expired or did not come from this page. Nothing was changed.")]
    Forbidden,
    #[error("{0}")]
    MalformedId(String),
    #[error("Nothing is recorded about this Checkout Session.")]
    UnknownSession,
    #[error("The database did not answer. Nothing was changed; reload in a moment.")]
    Unavailable(#[from] anyhow::Error),
}

#[derive(Template)]
#[template(path = "admin/problem.html")]
struct ProblemPage<'a> {
    title: &'a str,
    message: String,
    csrf: Option<String>,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Disabled | Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::SignInFirst => StatusCode::SEE_OTHER,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::MalformedId(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let title = match self {
            Self::Disabled => return HttpResponse::NotFound().finish(),
            Self::SignInFirst => return see_other("/admin/login"),
            Self::Forbidden => "Refused",
            Self::MalformedId(_) => "Not a Checkout Session id",
            Self::UnknownSession => "No such session",
            Self::Unavailable(error) => {
                tracing::error!(error = %format!("{error:#}"), "an admin page could not be answered");
                "Database unavailable"
            }
        };
        let page = ProblemPage {
            title,
            message: self.to_string(),
            csrf: None,
        };
        html(self.status_code(), &page)
    }
}

/// A rendered page; a template that fails to render is logged and answered 500.
fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(error) => {
            tracing::error!(error = %error, "could not render an admin page");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The page could not be rendered; see the log.")
        }
    }
}

/// `303 See Other` to `location`: where a form's browser goes next.
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}
