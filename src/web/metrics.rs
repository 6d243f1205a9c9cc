//! `GET /metrics`: the process's counters, and the inbox's and outbox's figures, which a
//! task of their own reads every few seconds: a scrape costs no query, however often
//! Prometheus (or anyone who can reach it) asks.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::AppState;
use crate::db::figures::Figures;
use crate::db::{Database, now_ms};
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
    gauge(
        &mut current,
        "stripe_budget_commands",
        "Commands (reconcile, refunds, ...) sharing the Stripe budget with the replicas now",
        standing.commands,
    );
    current.register(
        "replica",
        "This replica and the one that leads",
        Info::new(vec![
            ("replica", standing.replica.clone()),
            (
                "leader",
                standing.leader.clone().unwrap_or_else(|| "none".to_owned()),
            ),
        ]),
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
    let (figures, reachable) = state.figures.latest();
    if let Some(figures) = figures {
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
    }
    gauge(
        &mut current,
        "database_up",
        "1 when the database answered the latest reading of the figures above (every 5 s)",
        i64::from(reachable),
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

/// How often the figures are read.
const FIGURES_EVERY: Duration = Duration::from_secs(5);

/// The latest figures of the inbox and the outbox, and whether the latest reading
/// succeeded: when it failed, the last ones read are still shown, with
/// `fulfilld_database_up` 0, so that alerts on them do not fall silent in an outage.
#[derive(Clone, Default)]
pub struct FiguresCache(Arc<Mutex<(Option<Figures>, bool)>>);

impl FiguresCache {
    /// Reads `db`'s figures now and every [`FIGURES_EVERY`], for as long as the runtime runs.
    pub fn start(db: Database) -> Self {
        let cache = Self::default();
        let latest = cache.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FIGURES_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let read = tokio::time::timeout(FIGURES_EVERY, db.figures()).await;
                let figures = match read {
                    Ok(Ok(figures)) => Some(figures),
                    Ok(Err(error)) => {
                        tracing::warn!(error = %format!("{error:#}"), "metrics: the database did not answer");
                        None
                    }
                    Err(_) => {
                        tracing::warn!("metrics: the database did not answer in time");
                        None
                    }
                };
                let mut latest = latest.lock();
                *latest = match figures {
                    Some(figures) => (Some(figures), true),
                    None => (latest.0, false),
                };
            }
        });
        cache
    }

    /// The latest figures read, and whether the latest reading succeeded.
    fn latest(&self) -> (Option<Figures>, bool) {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Figures>, bool)> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}
