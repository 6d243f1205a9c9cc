//! `GET /api/access/{token}`: whether a download link still gives access, for the
//! merchant's download server. Read from the database on every request, so a grant
//! revoked or suspended on any replica answers so at once.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, ErrorText};
use crate::access::now_secs;
use crate::domain::GrantStatus;

/// Whether a download link gives access. Fields are in alphabetical order, the order this
/// answer has always had on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkAccess {
    /// When the link itself stops giving access, in seconds since the Unix epoch.
    pub expires_at: i64,
    /// The Checkout Session the grant belongs to.
    pub session_id: String,
    /// The digital product's SKU.
    pub sku: String,
    pub status: LinkStatus,
}

/// Where a download link stands: only `active` gives access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    Active,
    /// A dispute of the payment is open.
    Suspended,
    /// A refund took the access back.
    Revoked,
    /// The link is past its `expires_at`.
    Expired,
}

/// Whether a download link still gives access.
#[utoipa::path(
    get,
    path = "/api/access/{token}",
    operation_id = "get_access",
    tag = "access",
    params(("token" = String, Path, description = "The `{token}` of a download link")),
    responses(
        (status = 200, description = "The grant the link gives, and where it stands", body = LinkAccess),
        (status = 400, description = "The token is not one this shop signed", body = ErrorText),
        (status = 404, description = "No such grant", body = ErrorText),
        (status = 503, description = "The grant cannot be read right now; retry after `Retry-After`", body = ErrorText,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn access(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let token = path.into_inner();
    let Some(claim) = state.access.verify(&token) else {
        return HttpResponse::BadRequest()
            .json(ErrorText::new("the token is not one this shop signed"));
    };
    let status = match state.db.grant_status(&claim.session_id, &claim.sku).await {
        Ok(Some(status)) => status,
        Ok(None) => {
            return HttpResponse::NotFound().json(ErrorText::new("no such grant"));
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "could not read a grant");
            return HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "1"))
                .json(ErrorText::new("the grant cannot be read right now"));
        }
    };
    let status = match status {
        GrantStatus::Revoked => LinkStatus::Revoked,
        _ if claim.expires_at <= now_secs() => LinkStatus::Expired,
        GrantStatus::Suspended => LinkStatus::Suspended,
        GrantStatus::Active => LinkStatus::Active,
    };
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(LinkAccess {
            expires_at: claim.expires_at,
            session_id: claim.session_id,
            sku: claim.sku,
            status,
        })
}
