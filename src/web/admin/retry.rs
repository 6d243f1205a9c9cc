//! `POST /admin/effects/{id}/retry` and `POST /admin/events/{id}/retry`: what
//! `fulfilld effects retry` and `fulfilld events replay` do, from a button.

use actix_web::{HttpResponse, web};

use super::{AdminError, Operator, see_other};
use crate::inbox::Work;
use crate::web::AppState;

/// Makes a dead effect pending again and wakes the dispatcher, which carries it out now.
pub async fn effect(
    operator: Operator,
    path: web::Path<i64>,
    form: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    operator.check_csrf(&form)?;
    let id = path.into_inner();
    let notice = if state.db.revive_effect(id).await? {
        state.outbox.wake();
        tracing::info!(effect.id = id, "operator retried a dead effect");
        "effect_retried"
    } else {
        "effect_not_dead"
    };
    Ok(back_to_dead(notice, &id.to_string()))
}

/// Makes a dead event waiting again and hands it to the inbox's workers, as the serving
/// process does with any stored event; they carry it out through its session's actor.
pub async fn event(
    operator: Operator,
    path: web::Path<String>,
    form: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    operator.check_csrf(&form)?;
    let event_id = path.into_inner();
    if !state.db.revive_event(&event_id).await? {
        return Ok(back_to_dead("event_not_dead", &event_id));
    }
    tracing::info!(event.id = %event_id, "operator retried a dead event");
    // Had it vanished meanwhile, there is nothing to carry out; otherwise a worker takes
    // it, or, when all are busy, the replayer finds it waiting and due.
    if let Some(stored) = state.db.event(&event_id).await?
        && let Some(work) = Work::of(&state.db, stored).await
    {
        state.workers.offer(work);
    }
    Ok(back_to_dead("event_retried", &event_id))
}

fn back_to_dead(notice: &str, id: &str) -> HttpResponse {
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    see_other(&format!("/admin/dead?notice={notice}&id={id}"))
}
