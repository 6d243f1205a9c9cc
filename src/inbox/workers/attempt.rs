//! One attempt at a stored event: a Checkout event through its session's actor, refund
//! news through [`crate::reversal`]; its failure recorded for the replayer.

use std::time::Duration;

use crate::actors::Sessions;
use crate::db::Database;
use crate::db::inbox::EventFate;
use crate::domain::{AccountId, ReversalNews, SessionId};
use crate::fulfillment::{CarriedEvent, FulfillError, Trigger};
use crate::retry::backoff;
use crate::reversal::{self, ReversalError};

/// Attempts at an event before it is dead: with the backoff below, about a day of trying.
const EVENT_MAX_ATTEMPTS: u32 = 30;
/// The first wait before an event is tried again, doubled each time, capped.
const EVENT_BACKOFF: Duration = Duration::from_secs(30);
const EVENT_BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// When an attempt that met another session's lock is tried again.
pub(super) const CONTENDED_RETRY: Duration = Duration::from_secs(2);

/// Carries out a stored event through its session's actor and marks it processed once
/// the outcome is recorded. A failure is recorded on the event: it is retried with backoff
/// by the replayer, or dead when it cannot succeed or its attempts ran out. Returns
/// true when the attempt met a lock another session holds (a replica frozen inside its
/// transaction, which the server ends within seconds): the event is due again in
/// [`CONTENDED_RETRY`], not after the usual backoff, and the attempt is not counted.
#[tracing::instrument(skip_all, fields(event.id = %event_id, session.id = %session_id))]
pub async fn process(
    sessions: &Sessions,
    db: &Database,
    event_id: &str,
    session_id: &SessionId,
    trigger: Trigger,
) -> bool {
    let event = CarriedEvent::new(event_id);
    let ended = match sessions
        .handle_event(session_id, trigger, Some(&event))
        .await
    {
        // Already marked when this attempt recorded the session; not when the outcome
        // was known before (a duplicate), and then this marks it.
        Ok(_) if event.marked() => Ended::Marked,
        Ok(_) => Ended::Done,
        // Signed by Stripe yet unknown to it: another account's event, or a deleted
        // session. Kept, dead, for an operator: a wrong key can be fixed and the event
        // replayed.
        Err(FulfillError::UnknownSession) => Ended::Failed {
            reason: "Stripe answered resource_missing: no such Checkout Session for this key \
                     (another account's event, or a deleted session)"
                .to_owned(),
            permanent: true,
        },
        Err(error) => Ended::from(error),
    };
    settle(db, event_id, ended).await
}

/// Carries out refund news: stored and applied (see [`crate::reversal`]), then the event
/// is marked processed. Until its session is fulfilled, or while Stripe or the database
/// cannot answer, the event is tried again with backoff. Returns true when the attempt
/// met a lock another session holds, as [`process`] does.
#[tracing::instrument(skip_all, fields(event.id = %event_id))]
pub async fn reverse(
    sessions: &Sessions,
    db: &Database,
    event_id: &str,
    news: &ReversalNews,
    account: Option<AccountId>,
) -> bool {
    let ended = match reversal::reverse(sessions, news, account.as_ref()).await {
        Ok(reversal) => {
            tracing::debug!(?reversal, "refund news carried out");
            Ended::Done
        }
        Err(ReversalError::Fulfill(error)) => Ended::from(error),
        Err(error @ ReversalError::AwaitingPayment) => Ended::Failed {
            reason: error.to_string(),
            permanent: false,
        },
    };
    settle(db, event_id, ended).await
}

/// How an attempt at a stored event ended.
enum Ended {
    /// Carried out, and marked processed by the attempt's own record.
    Marked,
    /// Carried out; still to be marked processed.
    Done,
    /// It met a lock another database session holds.
    Contended(String),
    ShuttingDown,
    Failed {
        reason: String,
        permanent: bool,
    },
}

impl From<FulfillError> for Ended {
    fn from(error: FulfillError) -> Self {
        match error {
            FulfillError::Database(error) if is_lock_timeout(&error) => {
                Self::Contended(format!("{error:#}"))
            }
            FulfillError::ShuttingDown => Self::ShuttingDown,
            error => Self::Failed {
                reason: error.to_string(),
                permanent: false,
            },
        }
    }
}

/// Records on the event how its attempt ended; true when it met another session's lock.
async fn settle(db: &Database, event_id: &str, ended: Ended) -> bool {
    match ended {
        Ended::Marked => false,
        Ended::Done => {
            if let Err(error) = db.mark_processed(event_id).await {
                tracing::warn!(error = %format!("{error:#}"), "could not mark event processed; it will be replayed");
            }
            false
        }
        Ended::Contended(reason) => {
            if let Err(error) = db.put_off_event(event_id, &reason, CONTENDED_RETRY).await {
                tracing::warn!(error = %format!("{error:#}"), "could not record the event's failure; it will be replayed");
            }
            tracing::info!(
                "the session is locked by another database session; trying again shortly"
            );
            true
        }
        Ended::ShuttingDown => false,
        Ended::Failed { reason, permanent } => {
            record_failure(db, event_id, &reason, permanent).await;
            false
        }
    }
}

/// Whether `error` is PostgreSQL giving up on a lock after `lock_timeout`.
fn is_lock_timeout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<diesel::result::Error>(),
            Some(diesel::result::Error::DatabaseError(_, info)) if info.message().contains("lock timeout")
        )
    })
}

/// Records a failed attempt at an event: retried with backoff, or dead when `permanent`
/// or its attempts ran out.
pub(super) async fn record_failure(db: &Database, event_id: &str, reason: &str, permanent: bool) {
    let retry_after = |attempts: i32| {
        let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        (!permanent && attempts < EVENT_MAX_ATTEMPTS)
            .then(|| backoff(EVENT_BACKOFF, EVENT_BACKOFF_CAP, attempts))
    };
    match db.fail_event(event_id, reason, retry_after).await {
        Ok(Some(EventFate::Retry { attempts, delay })) => tracing::warn!(
            error = %reason,
            attempts,
            retry_in_s = delay.as_secs(),
            "event not carried out; it will be replayed"
        ),
        Ok(Some(EventFate::Dead { attempts })) => tracing::error!(
            error = %reason,
            attempts,
            "event dead; `fulfilld events replay {event_id}` tries it again"
        ),
        Ok(None) => {}
        Err(error) => tracing::warn!(
            error = %format!("{error:#}"),
            "could not record the event's failure; it will be replayed"
        ),
    }
}
