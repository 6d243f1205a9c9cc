//! Reversing a fulfilment: refund and dispute news, stored once, applied to the session it
//! concerns.
//!
//! News names a payment intent, not a session. The session is found by the payment intent
//! it was recorded with, or else by asking Stripe which Checkout Session made it (a session
//! fulfilled before fulfilld recorded payment intents, or one whose `completed` event has
//! not arrived yet, which is then fulfilled first; one fulfilld never recorded that Stripe
//! created more than [`NEWS_FULFILS_WITHIN`] ago was fulfilled elsewhere, and is recorded
//! without being fulfilled). The news is applied once the session is fulfilled; while its
//! payment is still clearing, the event waits and is tried again.
//!
//! [`NEWS_FULFILS_WITHIN`]: crate::fulfillment::NEWS_FULFILS_WITHIN

use crate::actors::Sessions;
use crate::db::refunds::Applied;
use crate::domain::{AccountId, Progress, ReversalNews, Status};
use crate::fulfillment::{FulfillError, Source, Trigger};
use crate::metrics::METRICS;

/// What became of refund news.
#[derive(Debug)]
pub enum Reversal {
    /// No Checkout Session made the payment: not fulfilld's to reverse.
    NotCheckout,
    /// The session was never fulfilled (it expired, or its payment failed): nothing to
    /// reverse.
    NotFulfilled,
    /// Applied to the session.
    Applied(Applied),
}

/// Why refund news could not be applied yet.
#[derive(Debug, thiserror::Error)]
pub enum ReversalError {
    #[error(transparent)]
    Fulfill(#[from] FulfillError),
    #[error("the session's payment has not cleared yet; the refund applies once it has")]
    AwaitingPayment,
}

impl From<anyhow::Error> for ReversalError {
    fn from(error: anyhow::Error) -> Self {
        Self::Fulfill(FulfillError::Database(error))
    }
}

/// Stores `news` and applies every refund stored for its payment intent to the session
/// that payment intent paid for.
#[tracing::instrument(skip_all, fields(news.id = %news.id, news.kind = news.kind.as_str(), session.id))]
pub async fn reverse(
    sessions: &Sessions,
    news: &ReversalNews,
    account: Option<&AccountId>,
) -> Result<Reversal, ReversalError> {
    let engine = sessions.engine();
    let changed = engine.db.store_refund(news).await?;
    match news.status {
        Progress::Refund(status) if changed && status.failed() => {
            // Money that was to go back did not: the merchant must know, and look.
            tracing::warn!(
                refund.status = status.as_str(),
                "a refund did not go through"
            );
            METRICS.reversal("refund_failed");
        }
        Progress::Dispute(status) if changed => {
            // The merchant has days to answer a dispute, and must know at once.
            tracing::warn!(
                dispute.status = status.as_str(),
                amount = news.amount,
                "a payment is disputed"
            );
            METRICS.reversal(if status.is_open() {
                "dispute_opened"
            } else {
                "dispute_closed"
            });
        }
        _ => {}
    }
    let pi = news.payment_intent.as_str();
    let id = match engine.db.session_of_payment_intent(pi).await? {
        Some(id) => id,
        None if engine.db.is_foreign_payment_intent(pi).await? => {
            return Ok(Reversal::NotCheckout);
        }
        None => match engine
            .stripe
            .session_of_payment_intent(pi, account)
            .await
            .map_err(|e| FulfillError::StripeUnavailable(e.to_string()))?
        {
            Some(id) => id,
            None => {
                engine.db.remember_foreign_payment_intent(pi).await?;
                return Ok(Reversal::NotCheckout);
            }
        },
    };
    tracing::Span::current().record("session.id", id.as_str());
    // Recorded already (answered from the database), or fulfilled now: a refund that came
    // before the session's own `completed` event. Or recorded now without being fulfilled:
    // news of an old order fulfilled elsewhere.
    let asks = || Trigger::Fulfill(Source::Refund(account.cloned()));
    let outcome = sessions.handle(&id, asks()).await?;
    if outcome.status == Status::AwaitingPayment {
        return Err(ReversalError::AwaitingPayment);
    }
    let applied = engine
        .db
        .apply_reversals(&id, &news.payment_intent, engine.tell)
        .await?;
    let Some(applied) = applied else {
        return Ok(Reversal::NotFulfilled);
    };
    // The actor's memory of the settled session, read again: pages show the refund now.
    // Best effort: the refund is applied, and an actor's memory is read again within a
    // second anyway.
    let _ = sessions.handle(&id, asks()).await;
    if applied.enqueued {
        engine.outbox.wake();
    }
    if applied.after != applied.before {
        tracing::warn!(
            from = applied.before.as_str(),
            to = applied.after.as_str(),
            refunded = applied.refunded,
            "a fulfilled session's status changed by a refund or dispute"
        );
        METRICS.reversal(match applied.after {
            Status::Fulfilled | Status::PartiallyRefunded if applied.before == Status::Disputed => {
                "restored"
            }
            after => after.as_str(),
        });
    }
    Ok(Reversal::Applied(applied))
}
