//! Claims on the events a replica works: taken a batch at a time before they are
//! carried out, renewed while they are worked, and taken over when another replica's
//! ran out.

use std::collections::HashSet;

use super::{EVENT_LEASE, REPLAY_PAGE, Work, Workers, lock};
use crate::db::{Database, millis, now_ms};

impl Workers {
    /// Claims the events of `batch` for this replica; returns those it got. The others
    /// are another replica's, or were carried out, buried or put off meanwhile.
    pub(super) async fn claim(&self, db: &Database, batch: Vec<Work>) -> Vec<Work> {
        // A fresh delivery is due at once; a replayed one only if it still is.
        let mut by_due: Vec<(i64, Vec<Work>)> = Vec::new();
        for work in batch {
            let due_by = work.due_by.unwrap_or(i64::MAX);
            match by_due.iter_mut().find(|(due, _)| *due == due_by) {
                Some((_, works)) => works.push(work),
                None => by_due.push((due_by, vec![work])),
            }
        }
        let mut claimed = Vec::new();
        for (due_by, works) in by_due {
            let ids: Vec<String> = works.iter().map(|work| work.event_id.clone()).collect();
            let got = db
                .claim_events(&ids, &self.replica, due_by, EVENT_LEASE)
                .await;
            let got: HashSet<String> = match got {
                Ok(got) => got.into_iter().collect(),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), events = ids.len(), "could not claim events; they will be replayed");
                    HashSet::new()
                }
            };
            for work in works {
                if got.contains(&work.event_id) {
                    claimed.push(work);
                } else {
                    self.untake(&work.event_id);
                }
            }
        }
        claimed
    }

    /// Every lease's length, queues the events nobody is carrying out, whenever they were
    /// received: those whose claim ran out, and those older than a lease never claimed.
    pub(super) async fn take_over_abandoned(self, db: Database) {
        let mut every = tokio::time::interval(EVENT_LEASE);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let unclaimed_before = now_ms() - millis(EVENT_LEASE);
            let abandoned = match db.abandoned_events(unclaimed_before, REPLAY_PAGE).await {
                Ok(abandoned) => abandoned,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not look for abandoned events");
                    continue;
                }
            };
            let mut queued = 0;
            for stored in abandoned {
                if let Some(work) = Work::of(&db, stored).await
                    && self
                        .submit(Work {
                            due_by: Some(now_ms()),
                            ..work
                        })
                        .await
                {
                    queued += 1;
                }
            }
            if queued > 0 {
                tracing::info!(events = queued, "took over events whose claim ran out");
            }
        }
    }

    /// Renews this replica's claims on the events it has, every third of their lease.
    pub(super) async fn renew_claims(self, db: Database) {
        let mut every = tokio::time::interval(EVENT_LEASE / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let ids: Vec<String> = lock(&self.taken).iter().cloned().collect();
            if let Err(error) = db
                .renew_event_claims(&ids, &self.replica, EVENT_LEASE)
                .await
            {
                tracing::warn!(error = %format!("{error:#}"), events = ids.len(), "could not renew the claims on events");
            }
        }
    }
}
