//! `fulfill_checkout`: what one attempt on a session does, whoever asked for it.
//!
//! The session actor calls this one attempt at a time; the database decides races between
//! processes. Stripe is asked only what the trigger does not already prove: a signed
//! `completed`/`async_payment_succeeded` event proves payment, so only the line items are
//! fetched; a customer or operator proves nothing, so the session itself is retrieved.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::catalog::{Catalog, Plan};
use crate::db::Database;
use crate::db::sessions::Record;
use crate::domain::{
    AccountId, LineItem, Outcome, PaymentStatus, SessionId, SessionState, SessionSummary, Status,
    Tell,
};
use crate::effects::Outbox;
use crate::metrics::{self, METRICS};
use crate::stripe::event::CheckoutEvent;
use crate::stripe::{GatewayError, Priority, StripeGateway, Urgency};
use crate::telemetry;

mod carried;
pub use carried::CarriedEvent;

/// How recently Stripe must have created a session fulfilld never recorded for refund or
/// dispute news to fulfil it: past Stripe's 3 days of webhook retries and reconcile's
/// window, with room for a delayed payment. An older session was fulfilled elsewhere
/// (before fulfilld, or by hand), and is recorded without being fulfilled again.
pub const NEWS_FULFILS_WITHIN: Duration = Duration::from_secs(7 * 86_400);

/// What the engine needs to fulfil a session.
pub struct Engine {
    pub db: Database,
    pub stripe: StripeGateway,
    pub catalog: Arc<Catalog>,
    /// Woken when a transaction enqueues effects.
    pub outbox: Outbox,
    /// Who is told of what happens to an order.
    pub tell: Tell,
}

/// Who asks for a fulfillment, and with what proof.
#[derive(Debug, Clone)]
pub enum Source {
    /// A signed event that proves the session is paid (or needs no payment).
    PaidEvent(SessionSummary),
    /// The customer's browser on the landing page: answered first, from the database
    /// when a signed event has already told us the state.
    Customer(Customer),
    /// The operator (CLI, reconcile, the holds' sweep): always checks Stripe unless the
    /// session is settled; on the connected account it names (reconcile found the session
    /// listed there) unless the session's record names one, else on its stored events'.
    Operator(Option<AccountId>),
    /// Signed refund news about the session, from the connected account it names: checks
    /// Stripe, on that account, unless the session is settled; a settled session is read
    /// again from the database, so the actor's memory shows what the refund changed. A
    /// session never recorded and created more than [`NEWS_FULFILS_WITHIN`] ago is
    /// recorded without being fulfilled.
    Refund(Option<AccountId>),
}

/// A customer waiting on the landing page: until when, and how many Stripe calls its
/// requests may still cause. Asked only when a call is about to be made, so requests
/// answered from the database cost nothing.
#[derive(Clone)]
pub struct Customer {
    /// When the customer's page stops waiting: no call is started or waited for after.
    gone_at: Instant,
    allowance: Arc<dyn Fn() -> Result<(), Duration> + Send + Sync>,
}

impl Customer {
    /// A customer who waits until `gone_at`; `allowance` answers whether one more call may
    /// be made, or how long until one may.
    pub fn new(
        gone_at: Instant,
        allowance: impl Fn() -> Result<(), Duration> + Send + Sync + 'static,
    ) -> Self {
        Self {
            gone_at,
            allowance: Arc::new(allowance),
        }
    }

    /// Makes `call` for the customer, within its allowance and its wait.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, FulfillError> {
        if Instant::now() >= self.gone_at {
            return Err(FulfillError::CustomerGone);
        }
        (self.allowance)().map_err(FulfillError::AllowanceSpent)?;
        match tokio::time::timeout_at(self.gone_at, call).await {
            Ok(answer) => Ok(answer?),
            Err(_elapsed) => Err(FulfillError::CustomerGone),
        }
    }
}

impl fmt::Debug for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Customer")
            .field("gone_at", &self.gone_at)
            .finish_non_exhaustive()
    }
}

/// Why a session is being looked at.
#[derive(Debug, Clone)]
pub enum Trigger {
    Fulfill(Source),
    /// `checkout.session.completed` with `payment_status = unpaid`.
    AwaitPayment(SessionSummary),
    /// `checkout.session.async_payment_failed`.
    PaymentFailed(SessionSummary),
    /// `checkout.session.expired`.
    Expired(SessionSummary),
}

impl Trigger {
    /// What a verified Checkout event asks for.
    pub fn from_event(kind: CheckoutEvent, summary: SessionSummary) -> Self {
        match kind {
            CheckoutEvent::Completed if summary.payment_status == PaymentStatus::Unpaid => {
                Self::AwaitPayment(summary)
            }
            CheckoutEvent::Completed | CheckoutEvent::AsyncPaymentSucceeded => {
                Self::Fulfill(Source::PaidEvent(summary))
            }
            CheckoutEvent::AsyncPaymentFailed => Self::PaymentFailed(summary),
            CheckoutEvent::Expired => Self::Expired(summary),
        }
    }
}

/// Why an attempt did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum FulfillError {
    #[error("Stripe does not know this Checkout Session")]
    UnknownSession,
    #[error("Stripe's API is unavailable: {0}")]
    StripeUnavailable(String),
    #[error("the database is unavailable: {0:#}")]
    Database(#[from] anyhow::Error),
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("the session's actor stopped each time it was asked; try again")]
    Unrouted,
    #[error("the customer's allowance of Stripe calls is spent for {0:?}")]
    AllowanceSpent(Duration),
    #[error("the customer stopped waiting before Stripe answered")]
    CustomerGone,
}

impl FulfillError {
    /// The error's name, as a metric's label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownSession => "unknown_session",
            Self::StripeUnavailable(_) => "stripe_unavailable",
            Self::Database(_) => "database_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Unrouted => "unrouted",
            Self::AllowanceSpent(_) => "allowance_spent",
            Self::CustomerGone => "customer_gone",
        }
    }
}

impl From<GatewayError> for FulfillError {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::UnknownSession => Self::UnknownSession,
            GatewayError::Unavailable(reason) | GatewayError::Refused(reason) => {
                Self::StripeUnavailable(reason)
            }
        }
    }
}

/// One attempt on session `id`: reads what is stored, asks Stripe what is not proven,
/// and records the result in one transaction.
///
/// Calls for anyone but a customer wait behind the webhook backlog until `urgency` is
/// raised (a customer asked for this session), then go ahead of it.
#[tracing::instrument(skip_all, fields(session.id = %id))]
pub async fn fulfill_checkout(
    engine: &Engine,
    id: &SessionId,
    trigger: Trigger,
    urgency: &Arc<Urgency>,
    event: Option<&CarriedEvent>,
) -> Result<Outcome, FulfillError> {
    let result = attempt(engine, id, trigger, urgency, event).await;
    let result_label = match &result {
        Ok(outcome) => outcome.status.as_str(),
        Err(error) => error.label(),
    };
    METRICS
        .fulfillment_attempts
        .get_or_create(&metrics::Outcome {
            outcome: result_label,
        })
        .inc();
    result
}

async fn attempt(
    engine: &Engine,
    id: &SessionId,
    trigger: Trigger,
    urgency: &Arc<Urgency>,
    event: Option<&CarriedEvent>,
) -> Result<Outcome, FulfillError> {
    let background = Priority::Raisable(Arc::clone(urgency));
    let mut stored_items = Vec::new();
    // `Some` once recorded: the record's account, which its signed event gave it.
    let mut recorded_account = None;
    let known_at = std::time::Instant::now();
    if let Some(stored) = engine.db.outcome(id).await? {
        let answer_from_store = stored.status.is_terminal()
            || matches!(
                trigger,
                Trigger::Fulfill(Source::Customer(_)) | Trigger::AwaitPayment(_)
            );
        if answer_from_store {
            return Ok(stored);
        }
        // Stored with `awaiting_payment`: a completed session's cart never changes.
        stored_items = stored.line_items;
        recorded_account = Some(stored.account);
    }
    let from_news =
        recorded_account.is_none() && matches!(trigger, Trigger::Fulfill(Source::Refund(_)));
    let (summary, status, items) = match trigger {
        Trigger::Fulfill(Source::PaidEvent(summary)) => {
            let items = match stored_items {
                items if items.is_empty() => {
                    let account = summary.account.as_ref();
                    // Asked again if this was learnt long ago: another replica may have
                    // recorded the session meanwhile, and its items need no call.
                    let needed = async || !matches!(engine.db.outcome(id).await, Ok(Some(stored)) if stored.status.is_terminal());
                    let fetched = engine
                        .stripe
                        .line_items_if_needed(id, account, &background, known_at, needed)
                        .await?;
                    match fetched {
                        Some(items) => items,
                        None => {
                            if let Some(stored) = engine.db.outcome(id).await? {
                                return Ok(stored);
                            }
                            engine.stripe.line_items(id, account, &background).await?
                        }
                    }
                }
                items => items,
            };
            (summary, Status::Fulfilled, items)
        }
        Trigger::Fulfill(source) => {
            // Nothing signed about the session comes with these: its connected account is
            // the one its record, or before it is recorded its stored events or the refund
            // news that asks, named.
            let account = match (recorded_account, &source) {
                (Some(account), _) => account.and_then(|raw| AccountId::parse(&raw).ok()),
                (None, Source::Refund(Some(account)) | Source::Operator(Some(account))) => {
                    Some(account.clone())
                }
                (None, _) => engine
                    .db
                    .event_account(id)
                    .await?
                    .and_then(|raw| AccountId::parse(&raw).ok()),
            };
            let account = account.as_ref();
            let (summary, items) = match source {
                Source::Customer(customer) => {
                    customer
                        .call(
                            engine
                                .stripe
                                .checkout_session(id, account, &Priority::Interactive),
                        )
                        .await?
                }
                _ => {
                    engine
                        .stripe
                        .checkout_session(id, account, &background)
                        .await?
                }
            };
            let status = match (summary.state, summary.payment_status) {
                // Not paid yet, and nothing to record: the customer is still at checkout.
                (SessionState::Open, _) => return Ok(unrecorded(&summary, items)),
                (SessionState::Expired, _) => Status::Expired,
                (SessionState::Complete, PaymentStatus::Unpaid) => Status::AwaitingPayment,
                (SessionState::Complete, _) => Status::Fulfilled,
            };
            (summary, status, items)
        }
        // Fetched now, stored with the status and used again when the payment clears: the
        // customer sees the cart on every view, at no extra call.
        Trigger::AwaitPayment(summary) => {
            let account = summary.account.as_ref();
            let items = engine.stripe.line_items(id, account, &background).await?;
            (summary, Status::AwaitingPayment, items)
        }
        Trigger::PaymentFailed(summary) => (summary, Status::PaymentFailed, Vec::new()),
        Trigger::Expired(summary) => (summary, Status::Expired, Vec::new()),
    };
    let elsewhere = from_news && status == Status::Fulfilled && created_long_ago(&summary);
    let plan = match status {
        Status::Fulfilled if !elsewhere => engine.catalog.plan(id, &items),
        _ => Plan::default(),
    };
    // The record's transaction is a span of its own, and the trace its effects continue.
    let span = tracing::info_span!("record", session.status = status.as_str());
    let trace = span.in_scope(telemetry::traceparent);
    let recorded = engine
        .db
        .record(Record {
            summary: &summary,
            status,
            line_items: &items,
            plan: &plan,
            tell: engine.tell,
            elsewhere,
            event: event.map(CarriedEvent::id),
            trace: trace.as_deref(),
        })
        .instrument(span)
        .await?;
    if let Some(event) = event {
        event.mark();
    }
    if recorded.effects > 0 {
        engine.outbox.wake();
    }
    let outcome = recorded.outcome;
    if recorded.claimed && elsewhere {
        tracing::info!(
            status = outcome.status.as_str(),
            "session recorded without fulfilment: created more than {} days ago, so fulfilled elsewhere",
            NEWS_FULFILS_WITHIN.as_secs() / 86_400
        );
    } else if recorded.claimed {
        METRICS
            .fulfillments
            .get_or_create(&metrics::Outcome {
                outcome: status.as_str(),
            })
            .inc();
        tracing::info!(
            status = outcome.status.as_str(),
            line_items = outcome.line_items.len(),
            "session {}",
            outcome.status.as_str().replace('_', " ")
        );
    } else {
        tracing::debug!(status = outcome.status.as_str(), "session already recorded");
    }
    Ok(outcome)
}

/// Whether Stripe created the session more than [`NEWS_FULFILS_WITHIN`] ago.
fn created_long_ago(summary: &SessionSummary) -> bool {
    let now = crate::db::now_ms() / 1000;
    summary.created.is_some_and(|created| {
        u64::try_from(now.saturating_sub(created))
            .is_ok_and(|age| age > NEWS_FULFILS_WITHIN.as_secs())
    })
}

/// The outcome shown for a session that is still open at Stripe.
fn unrecorded(summary: &SessionSummary, line_items: Vec<LineItem>) -> Outcome {
    Outcome {
        session_id: summary.id.to_string(),
        account: summary.account.as_ref().map(ToString::to_string),
        status: Status::AwaitingPayment,
        livemode: summary.livemode,
        currency: summary.currency.clone(),
        amount_total: summary.amount_total,
        amount_refunded: 0,
        fulfilled_at: None,
        line_items,
        access: Vec::new(),
        shipment: None,
    }
}
