//! `GET /api/access/{token}`: whether a download link still gives access, for the
//! merchant's download server. Read from the database on every request, so a grant
//! revoked or suspended on any replica answers so at once.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::access::now_secs;
use crate::domain::GrantStatus;

pub async fn access(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let token = path.into_inner();
    let Some(claim) = state.access.verify(&token) else {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "the token is not one this shop signed" }));
    };
    let status = match state.db.grant_status(&claim.session_id, &claim.sku).await {
        Ok(Some(status)) => status,
        Ok(None) => {
            return HttpResponse::NotFound().json(json!({ "error": "no such grant" }));
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "could not read a grant");
            return HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "1"))
                .json(json!({ "error": "the grant cannot be read right now" }));
        }
    };
    let status = match status {
        GrantStatus::Revoked => "revoked",
        _ if claim.expires_at <= now_secs() => "expired",
        GrantStatus::Suspended => "suspended",
        GrantStatus::Active => "active",
    };
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "status": status,
            "sku": claim.sku,
            "session_id": claim.session_id,
            "expires_at": claim.expires_at,
        }))
}
