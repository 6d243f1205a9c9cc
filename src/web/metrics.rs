//! `GET /metrics`: the process's counters, and the figures that are read when scraped.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::AppState;
use crate::db::now_ms;
use crate::metrics::{CONTENT_TYPE, METRICS};

/// Prometheus's scrape.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut current = Registry::with_prefix("fulfilld");
    let standing = state.standing.borrow().clone();
    gauge(
        &mut current,
        "replicas",
        "Replicas alive on this database, as this one sees them",
        standing.alive,
    );
    let leads = standing.leader.as_deref() == Some(standing.replica.as_str());
    gauge(
        &mut current,
        "leader",
        "1 on the replica that runs reconcile",
        i64::from(leads),
    );
    let live = state.sessions.live_actors().await;
    gauge(&mut current, "session_actors", "Session actors alive", live);
    let reachable = match state.db.figures().await {
        Ok(figures) => {
            let oldest = figures.oldest_waiting_at.map_or(0.0, |at| {
                Duration::from_millis(u64::try_from(now_ms() - at).unwrap_or(0)).as_secs_f64()
            });
            let age = Gauge::<f64, AtomicU64>::default();
            age.set(oldest);
            current.register_with_unit(
                "inbox_oldest_unprocessed_age",
                "Age of the oldest stored event not yet carried out (0 when none waits)",
                Unit::Seconds,
                age,
            );
            gauge(
                &mut current,
                "inbox_backlog",
                "Stored events not yet carried out, dead ones aside",
                figures.inbox_backlog,
            );
            gauge(
                &mut current,
                "events_dead",
                "Events given up on; `fulfilld events replay` or /admin retries them",
                figures.dead_events,
            );
            gauge(
                &mut current,
                "effects_pending",
                "Effects waiting to be carried out",
                figures.pending_effects,
            );
            gauge(
                &mut current,
                "effects_dead",
                "Effects given up on; `fulfilld effects retry` or /admin retries them",
                figures.dead_effects,
            );
            1
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "metrics: the database did not answer");
            0
        }
    };
    gauge(
        &mut current,
        "database_up",
        "1 when the database answered this scrape's queries",
        reachable,
    );
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(METRICS.render(&current))
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: impl TryInto<i64>) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value.try_into().unwrap_or(i64::MAX));
    registry.register(name, help, gauge);
}
