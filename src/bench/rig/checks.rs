//! The exactly-once checks a scenario ends with, once every receipt has arrived.

use anyhow::{Context, bail, ensure};

use super::{MAIL_DOMAIN, Rig};
use crate::db::Database;

impl Rig {
    /// Checks every figure of exactly once, allowing `duplicates` receipts sent twice;
    /// returns how many were.
    pub(super) async fn check_exactly_once(
        &self,
        duplicates: usize,
        db: &Database,
    ) -> anyhow::Result<usize> {
        let expected = i64::try_from(self.sessions.len()).unwrap_or(i64::MAX);
        let counts = self.sink.counts();
        let mut twice = 0;
        for session in &self.sessions {
            let id = format!("{session}.receipt@{MAIL_DOMAIN}");
            match counts.get(&id) {
                Some(1) => {}
                Some(2) => twice += 1,
                Some(times) => bail!("{session}'s receipt was sent {times} times"),
                None => bail!("{session}'s receipt never arrived"),
            }
        }
        ensure!(
            twice <= duplicates,
            "{twice} receipts were sent twice; at most {duplicates} may be"
        );
        ensure!(
            counts.len() == self.sessions.len(),
            "{} messages arrived for {} sessions",
            counts.len(),
            self.sessions.len()
        );
        let tally = db.tally().await?;
        ensure!(
            tally.fulfilled == expected && tally.sessions == expected,
            "{} of {expected} sessions fulfilled ({} recorded)",
            tally.fulfilled,
            tally.sessions
        );
        ensure!(
            tally.access_grants == 2 * expected,
            "{} access grants for {expected} sessions of two products",
            tally.access_grants
        );
        // A receipt each; with the mug, its stock movement and its shipment too.
        let effects = if self.warehouse.is_some() { 3 } else { 1 } * expected;
        ensure!(
            tally.effects == effects && tally.effects_done == effects,
            "{} effects ({} done) for {expected} sessions",
            tally.effects,
            tally.effects_done
        );
        if let Some(warehouse) = &self.warehouse {
            warehouse.check(&self.sessions)?;
            let (stock, _) = db.stock("BENCH-MUG").await?.context("no stock of mugs")?;
            ensure!(
                stock == 1_000_000 - expected,
                "{} mugs left after {expected} sold, of 1,000,000",
                stock
            );
        }
        ensure!(
            tally.events_processed == tally.events,
            "{} of {} events processed",
            tally.events_processed,
            tally.events
        );
        Ok(twice)
    }
}
