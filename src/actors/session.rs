//! One actor per live Checkout Session id: attempts run one at a time, and duplicates that
//! arrive meanwhile wait in the mailbox and are answered from the settled outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::Instrument;

use super::registry::{Passivated, SessionRegistry};
use crate::domain::{Outcome, SessionId};
use crate::fulfillment::{CarriedEvent, Engine, FulfillError, Source, Trigger, fulfill_checkout};
use crate::stripe::Urgency;
use crate::telemetry;

/// Messages a session actor holds before senders wait for room. A storm of duplicate
/// deliveries queues here and each is answered from memory once the first attempt settles.
const MAILBOX_CAPACITY: usize = 1024;
/// How long an actor that learnt nothing worth keeping (Stripe does not know its session,
/// or a customer's lookup was refused or abandoned) stays for the attempts queued behind.
const LINGER: Duration = Duration::from_secs(1);
/// How long an actor whose session is settled stays after its last request: long enough
/// to answer a storm of duplicates from memory, short enough that a busy shop's memory
/// does not grow with its sales (a later request finds the outcome in the database).
const SETTLED_IDLE: Duration = Duration::from_secs(5);
/// How long a settled outcome is answered from memory before it is read again: refunds
/// change a settled session, and another replica may have applied them.
const SETTLED_FRESH: Duration = Duration::from_secs(1);

/// Ask the session's actor to act on a trigger, for the stored event it names if any (the
/// event is marked processed in the transaction that records the session); answers with
/// the session's outcome; with the asker's trace, when traces are exported, which the
/// attempt continues.
#[derive(Message)]
#[rtype(result = "Result<Arc<Outcome>, FulfillError>")]
pub struct Attempt(
    pub Trigger,
    pub Option<Arc<CarriedEvent>>,
    pub Option<opentelemetry::Context>,
);

pub struct SessionActor {
    id: SessionId,
    generation: u64,
    engine: Arc<Engine>,
    registry: Addr<SessionRegistry>,
    idle_after: Duration,
    last_active: Instant,
    /// A final outcome and when it was read: only refunds change it, so requests within
    /// [`SETTLED_FRESH`] of the read cost no I/O.
    settled: Option<(Arc<Outcome>, Instant)>,
    /// Stripe said it does not know this session.
    unknown: bool,
    /// Raised by the registry's handle when a customer asks for this session, even while
    /// an attempt holds the mailbox: that attempt's Stripe calls then go ahead of the
    /// backlog, so the customer waits about one round trip, not for the backlog.
    urgency: Arc<Urgency>,
}

impl SessionActor {
    pub fn new(
        id: SessionId,
        generation: u64,
        engine: Arc<Engine>,
        registry: Addr<SessionRegistry>,
        idle_after: Duration,
        urgency: Arc<Urgency>,
    ) -> Self {
        Self {
            id,
            generation,
            engine,
            registry,
            idle_after,
            last_active: Instant::now(),
            settled: None,
            unknown: false,
            urgency,
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        stop_when_idle(ctx, self.idle_after, self.idle_after);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // `stopped` cannot wait for mailbox room; the registry's bound is for senders of
        // lookups, and this message is one per actor lifetime.
        self.registry.do_send(Passivated {
            id: self.id.clone(),
            generation: self.generation,
        });
    }
}

impl Handler<Attempt> for SessionActor {
    // `AtomicResponse` holds the mailbox until the attempt settles, so attempts never
    // interleave across their awaits.
    type Result = AtomicResponse<Self, Result<Arc<Outcome>, FulfillError>>;

    fn handle(
        &mut self,
        Attempt(trigger, event, trace): Attempt,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        self.last_active = Instant::now();
        if let Some((outcome, read_at)) = &self.settled {
            let refund = matches!(trigger, Trigger::Fulfill(Source::Refund(_)));
            if read_at.elapsed() < SETTLED_FRESH && !refund {
                return AtomicResponse::new(Box::pin(fut::ready(Ok(Arc::clone(outcome)))));
            }
            return self.read_again(Arc::clone(outcome));
        }
        // Only for triggers that would ask Stripe the same question: signed events that
        // need no call (a failed payment, an expiry) are still recorded.
        if self.unknown
            && matches!(
                trigger,
                Trigger::Fulfill(Source::Customer(_) | Source::Operator(_) | Source::Refund(_))
            )
        {
            return AtomicResponse::new(Box::pin(fut::ready(Err(FulfillError::UnknownSession))));
        }
        let engine = Arc::clone(&self.engine);
        let id = self.id.clone();
        let urgency = Arc::clone(&self.urgency);
        let span = telemetry::child_of(trace, || tracing::info_span!("attempt", session.id = %id));
        let attempt = async move {
            fulfill_checkout(&engine, &id, trigger, &urgency, event.as_deref())
                .await
                .map(Arc::new)
        }
        .instrument(span);
        AtomicResponse::new(Box::pin(attempt.into_actor(self).map(
            |result, actor, ctx| {
                actor.last_active = Instant::now();
                // Stripe does not know the id, or a customer's lookup learnt nothing: the
                // actor goes soon rather than after SESSION_IDLE_SECS (a flood of made-up
                // ids). Attempts queued meanwhile about an unknown id get that answer from
                // memory; one that arrives as it stops is routed to a new actor.
                let learnt_nothing = matches!(
                    result,
                    Err(FulfillError::AllowanceSpent(_) | FulfillError::CustomerGone)
                ) && actor.settled.is_none();
                if matches!(result, Err(FulfillError::UnknownSession)) {
                    actor.unknown = true;
                }
                if actor.unknown || learnt_nothing {
                    ctx.run_later(LINGER, |_, ctx| ctx.stop());
                }
                if let Ok(outcome) = &result
                    && outcome.is_final()
                {
                    if actor.settled.is_none() {
                        stop_when_idle(ctx, SETTLED_IDLE, SETTLED_IDLE);
                    }
                    actor.settled = Some((Arc::clone(outcome), Instant::now()));
                }
                result
            },
        )))
    }
}

impl SessionActor {
    /// Reads a settled session again: only refunds change it, perhaps on another replica.
    /// While the database cannot answer, what was settled is still the best answer.
    fn read_again(
        &mut self,
        stale: Arc<Outcome>,
    ) -> AtomicResponse<Self, Result<Arc<Outcome>, FulfillError>> {
        let (db, id) = (self.engine.db.clone(), self.id.clone());
        let read = async move { db.outcome(&id).await };
        AtomicResponse::new(Box::pin(read.into_actor(self).map(
            move |read, actor, _| match read {
                Ok(Some(outcome)) => {
                    let outcome = Arc::new(outcome);
                    actor.settled = Some((Arc::clone(&outcome), Instant::now()));
                    Ok(outcome)
                }
                Ok(None) | Err(_) => Ok(stale),
            },
        )))
    }
}

/// Stops the actor once it has had no request for `idle`, looking again in `check_in`
/// and then whenever that much time will have passed since its latest request.
fn stop_when_idle(ctx: &mut Context<SessionActor>, idle: Duration, check_in: Duration) {
    ctx.run_later(check_in, move |actor, ctx| {
        match idle.checked_sub(actor.last_active.elapsed()) {
            Some(left) if !left.is_zero() => stop_when_idle(ctx, idle, left),
            _ => ctx.stop(),
        }
    });
}
