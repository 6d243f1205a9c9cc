use actix_web::{HttpResponse, web};

use super::AppState;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// The database answers (migrations ran before the server started); says which replica
/// this is, which one leads (runs reconcile), and how many share the database.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.db.ping().await {
        Ok(()) => {
            let standing = state.standing.borrow().clone();
            HttpResponse::Ok().content_type("text/plain").body(format!(
                "ready\nreplica: {}\nleader: {}\nreplicas: {}\n",
                standing.replica,
                standing.leader.as_deref().unwrap_or("none"),
                standing.alive
            ))
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "not ready");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("database unavailable\n")
        }
    }
}
