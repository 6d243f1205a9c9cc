//! Pruning: processed webhook events are deleted once older than `EVENT_RETENTION`, by
//! the leading replica, in small batches so that no statement holds the table for long;
//! expired admin sign-ins, and stock holds settled as long ago, go at the same time.

use std::time::Duration;

use tokio::sync::watch;

use crate::db::{Database, millis, now_ms};

/// How often the leader looks for events to prune.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Events deleted by one statement at most.
const PRUNE_BATCH: i64 = 1_000;

/// Prunes events processed more than `retention` ago, every [`PRUNE_EVERY`] while this
/// replica leads, for as long as the runtime runs.
pub fn spawn_pruner(db: Database, retention: Duration, mut leading: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if !*leading.borrow_and_update() {
                continue;
            }
            if let Err(error) = db.forget_expired_admin_sessions().await {
                tracing::warn!(error = %format!("{error:#}"), "could not forget expired sign-ins");
            }
            let before = now_ms() - millis(retention);
            match db.prune_reservations(before).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(holds = pruned, "pruned settled stock holds"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not prune settled stock holds");
                }
            }
            match prune(&db, before).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(events = pruned, "pruned processed events"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not prune processed events");
                }
            }
        }
    });
}

/// Deletes every event processed before `before`, a batch at a time. Returns how many.
pub async fn prune(db: &Database, before: i64) -> anyhow::Result<usize> {
    let mut pruned = 0;
    loop {
        let deleted = db.prune_events(before, PRUNE_BATCH).await?;
        pruned += deleted;
        if deleted < usize::try_from(PRUNE_BATCH).unwrap_or(usize::MAX) {
            return Ok(pruned);
        }
    }
}
