use actix_web::{HttpResponse, web};

use super::AppState;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// The database answers (migrations ran before the server started): `ready`, or 503
/// `not ready`, and nothing more. Which replica this is and which one leads are on the
/// admin page and in the metrics, not here for anyone to read.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.db.ping().await {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "not ready");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("not ready\n")
        }
    }
}
