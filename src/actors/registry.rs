//! Routes every request for a session id to that id's one [`SessionActor`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::session::{Attempt, SessionActor};
use crate::domain::{Outcome, SessionId};
use crate::fulfillment::{CarriedEvent, Engine, FulfillError, Source, Trigger};
use crate::stripe::Urgency;
use crate::telemetry;

/// Lookups the registry holds before senders wait for room.
const MAILBOX_CAPACITY: usize = 4096;
/// How often a sender asks again when the actor it was given stopped under it.
const MAX_ROUTING_TRIES: usize = 5;

/// Which actor serves a session id, started on demand.
#[derive(Message)]
#[rtype(result = "(Addr<SessionActor>, Arc<Urgency>)")]
pub struct Lookup(pub SessionId);

/// Sent by a session actor as it stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Passivated {
    pub id: SessionId,
    pub generation: u64,
}

pub struct SessionRegistry {
    engine: Arc<Engine>,
    idle_after: Duration,
    sessions: HashMap<SessionId, Live>,
    next_generation: u64,
}

/// A live session actor: its address, its generation and its urgency.
struct Live {
    addr: Addr<SessionActor>,
    generation: u64,
    urgency: Arc<Urgency>,
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

impl Handler<Lookup> for SessionRegistry {
    type Result = MessageResult<Lookup>;

    fn handle(&mut self, Lookup(id): Lookup, ctx: &mut Self::Context) -> Self::Result {
        if let Some(live) = self.sessions.get(&id)
            && live.addr.connected()
        {
            return MessageResult((live.addr.clone(), Arc::clone(&live.urgency)));
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let urgency = Arc::new(Urgency::default());
        let actor = SessionActor::new(
            id.clone(),
            generation,
            Arc::clone(&self.engine),
            ctx.address(),
            self.idle_after,
            Arc::clone(&urgency),
        );
        let addr = actor.start();
        let live = Live {
            addr: addr.clone(),
            generation,
            urgency: Arc::clone(&urgency),
        };
        self.sessions.insert(id, live);
        MessageResult((addr, urgency))
    }
}

impl Handler<Passivated> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, stopped: Passivated, _ctx: &mut Self::Context) {
        // Remove only the entry that actor was handed: a newer actor for the same id may
        // already have taken its place.
        if self
            .sessions
            .get(&stopped.id)
            .is_some_and(|live| live.generation == stopped.generation)
        {
            self.sessions.remove(&stopped.id);
        }
    }
}

/// The engine's front door: every webhook, landing-page visit and CLI request for a
/// session goes through here to that session's actor.
///
/// Session actors are spread over one arbiter (thread) per core by their id's hash, each
/// arbiter with a registry of its own, so the engine uses every core and one session's
/// requests always meet the same actor.
#[derive(Clone)]
pub struct Sessions {
    registries: Arc<[Addr<SessionRegistry>]>,
    engine: Arc<Engine>,
    /// Stopped, with their actors, when the last handle goes.
    _arbiters: Arc<Arbiters>,
}

struct Arbiters(Vec<Arbiter>);

impl Drop for Arbiters {
    fn drop(&mut self) {
        for arbiter in &self.0 {
            arbiter.stop();
        }
    }
}

impl Sessions {
    /// Starts a registry on each of `shards` new arbiters (at least one).
    pub fn start(engine: Arc<Engine>, idle_after: Duration, shards: usize) -> Self {
        let arbiters: Vec<Arbiter> = (0..shards.max(1)).map(|_| Arbiter::new()).collect();
        let registries = arbiters
            .iter()
            .map(|arbiter| {
                let engine = Arc::clone(&engine);
                SessionRegistry::start_in_arbiter(&arbiter.handle(), move |_| SessionRegistry {
                    engine,
                    idle_after,
                    sessions: HashMap::new(),
                    next_generation: 0,
                })
            })
            .collect();
        Self {
            registries,
            engine,
            _arbiters: Arc::new(Arbiters(arbiters)),
        }
    }

    /// What the actors work with: the database, Stripe, the catalog and the outbox.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The registry of the arbiter that serves `id`.
    fn registry(&self, id: &SessionId) -> &Addr<SessionRegistry> {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(id.as_str(), &mut hasher);
        let shard = std::hash::Hasher::finish(&hasher) % self.registries.len() as u64;
        &self.registries[usize::try_from(shard).unwrap_or_default()]
    }

    /// Hands `trigger` to the actor for `id` and waits for the outcome.
    pub async fn handle(
        &self,
        id: &SessionId,
        trigger: Trigger,
    ) -> Result<Arc<Outcome>, FulfillError> {
        self.handle_event(id, trigger, None).await
    }

    /// Like [`Self::handle`], for stored event `event`: the transaction that records the
    /// session marks the event processed too, and says so on `event`.
    pub async fn handle_event(
        &self,
        id: &SessionId,
        trigger: Trigger,
        event: Option<&Arc<CarriedEvent>>,
    ) -> Result<Arc<Outcome>, FulfillError> {
        for _ in 0..MAX_ROUTING_TRIES {
            let (actor, urgency) = self
                .registry(id)
                .send(Lookup(id.clone()))
                .await
                .map_err(|_| FulfillError::ShuttingDown)?;
            // Before queueing behind an attempt in flight: it is now a customer's too.
            if matches!(trigger, Trigger::Fulfill(Source::Customer(_))) {
                urgency.raise();
            }
            match actor
                .send(Attempt(
                    trigger.clone(),
                    event.map(Arc::clone),
                    telemetry::current(),
                ))
                .await
            {
                Ok(result) => return result,
                // The actor passivated between lookup and delivery: ask again.
                Err(MailboxError::Closed) => continue,
                Err(MailboxError::Timeout) => return Err(FulfillError::ShuttingDown),
            }
        }
        Err(FulfillError::Unrouted)
    }

    /// How many session actors are live, for metrics and tests of passivation.
    pub async fn live_actors(&self) -> usize {
        let mut live = 0;
        for registry in self.registries.iter() {
            live += registry.send(CountLive).await.unwrap_or(0);
        }
        live
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
struct CountLive;

impl Handler<CountLive> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _: CountLive, _ctx: &mut Self::Context) -> usize {
        self.sessions.len()
    }
}
