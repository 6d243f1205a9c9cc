//! The sweep of stock holds whose session expired with no event to say so.
//!
//! `checkout.session.expired` releases a hold as it records the expiry. When that event
//! never comes (it was lost, or the session was paid at the last moment and its
//! `completed` event is late), the sweep asks Stripe about each session past its expiry
//! before it lets go: a paid one is fulfilled and its hold becomes its stock movement; an
//! expired one is recorded and its hold released; one Stripe still shows open, or
//! complete but awaiting a delayed payment, keeps its hold for the next pass. A hold whose
//! session was never stored (Stripe did not answer, or the process died before it could
//! write the answer) is released: no customer was ever sent to pay it.

use std::time::Duration;

use tokio::sync::watch;

use crate::actors::Sessions;
use crate::db::reservations::{TAKEN, settled_state};
use crate::db::{Database, millis};
use crate::domain::{SessionId, Status};
use crate::fulfillment::{FulfillError, Source, Trigger};

/// How long after a session's expiry its hold is looked at: Stripe expires sessions a
/// little after `expires_at`, and sends the event after that.
pub const GRACE: Duration = Duration::from_secs(5 * 60);
/// How long a hold may wait for Stripe to create its session: longer than any one call
/// (two attempts and the pacer's wait).
pub const UNATTACHED_FOR: Duration = Duration::from_secs(5 * 60);
/// How long a hold Stripe could not settle waits before it is looked at again.
const PUT_OFF: Duration = Duration::from_secs(10 * 60);
/// How often the leader sweeps.
const EVERY: Duration = Duration::from_secs(60);
/// Holds looked at per pass.
const BATCH: i64 = 200;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Holds released: their sessions expired, failed, or were never created.
    pub released: usize,
    /// Holds that became stock movements: their sessions were paid.
    pub taken: usize,
    /// Holds kept: their sessions are open or awaiting payment, or Stripe could not say.
    pub kept: usize,
}

/// One pass at `now` (ms) over the holds whose session expired more than [`GRACE`] ago,
/// or that got no session within [`UNATTACHED_FOR`].
pub async fn sweep(sessions: &Sessions, db: &Database, now: i64) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    let expired_before = now - millis(GRACE);
    let unattached_before = now - millis(UNATTACHED_FOR);
    let due = db
        .due_reservations(now, expired_before, unattached_before, BATCH)
        .await?;
    for due in due {
        // No session was stored for it: none was given to a customer to pay.
        let Some(id) = due.session_id.and_then(|raw| SessionId::parse(&raw).ok()) else {
            // Unless the session is stored meanwhile: then it is the next pass's to judge.
            if db.release_unattached(&due.id).await? {
                swept.released += 1;
            }
            continue;
        };
        // The session's actor asks Stripe (or answers from the record), and recording
        // the session settles its hold in the same transaction.
        let status = match sessions
            .handle(&id, Trigger::Fulfill(Source::Operator(None)))
            .await
        {
            Ok(outcome) => outcome.status,
            // Stripe does not know it (the key changed, say): nobody can pay for it.
            Err(FulfillError::UnknownSession) => {
                if db.release_reservation(&due.id).await? {
                    swept.released += 1;
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(session.id = %id, error = %error, "could not look at an expired hold's session");
                Status::AwaitingPayment
            }
        };
        // Recorded before this pass, or by another replica: settled here.
        db.settle_reservations(id.as_str(), status).await?;
        match settled_state(status) {
            Some(TAKEN) => swept.taken += 1,
            Some(_) => swept.released += 1,
            None => {
                // Still open at Stripe, or Stripe could not say: looked at again later,
                // behind the holds that are due now.
                db.put_off_reservation(&due.id, now + millis(PUT_OFF))
                    .await?;
                swept.kept += 1;
            }
        }
    }
    Ok(swept)
}

/// Sweeps every minute while this replica leads (`leading`).
pub fn spawn_sweeper(sessions: Sessions, db: Database, mut leading: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            if leading.wait_for(|leads| *leads).await.is_err() {
                return;
            }
            match sweep(&sessions, &db, crate::db::now_ms()).await {
                Ok(swept) if swept != Swept::default() => tracing::info!(
                    released = swept.released,
                    taken = swept.taken,
                    kept = swept.kept,
                    "swept expired stock holds"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not sweep stock holds")
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}
