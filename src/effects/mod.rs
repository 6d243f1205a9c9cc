//! Side effects, carried out after the transaction that enqueued them.
//!
//! A fulfillment (or a payment failure) writes effect rows in its own transaction; the
//! [`EffectDispatcher`] hands each due row to the actor for its kind and records how it
//! went. Every actor is idempotent, because an effect can be attempted more than once: the
//! receipt has a deterministic `Message-ID`, stock moves once per (session, SKU) in the
//! same transaction that marks the effect done, and the warehouse gets the same
//! `Idempotency-Key` on every retry.
//!
//! Error policy: an actor answers [`EffectError::Retry`] for anything that may pass
//! (network, 5xx, 429, a full mailbox) and [`EffectError::Permanent`] for what never will
//! (a refused address, a 4xx). The dispatcher logs each failure once, where it decides
//! what happens next.

mod dispatcher;
mod email;
mod inventory;
mod mail;
mod shipping;

use std::sync::Arc;

use actix::{Actor, Addr, Message};
use tokio::sync::Notify;

pub use dispatcher::EffectDispatcher;
pub use mail::Transport;

use crate::configuration::Config;
use crate::db::Database;
use crate::db::effects::ClaimedEffect;
use crate::domain::EffectKind;
use email::EmailActor;
use inventory::InventoryActor;
use shipping::ShippingActor;

/// Asks an actor to carry out one claimed effect.
#[derive(Debug, Message)]
#[rtype(result = "Result<Effected, EffectError>")]
pub struct Perform {
    pub effect: ClaimedEffect,
    pub kind: EffectKind,
}

/// How an attempt succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effected {
    /// Done; the dispatcher marks the row done.
    Done,
    /// Done, and the row was marked done in the actor's own transaction.
    Recorded,
}

/// Why an attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EffectError {
    /// May succeed later: retried with backoff until the attempts run out.
    #[error("{0}")]
    Retry(String),
    /// Will never succeed as it is: dead at once, for an operator.
    #[error("{0}")]
    Permanent(String),
}

/// Wakes the dispatcher when a transaction has enqueued effects. Cheap to clone.
#[derive(Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// Tells the dispatcher there may be new work; never blocks.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// The side-effect actors, one per kind of work.
#[derive(Clone)]
pub struct EffectActors {
    email: Addr<EmailActor>,
    inventory: Addr<InventoryActor>,
    shipping: Addr<ShippingActor>,
}

impl EffectActors {
    /// Starts the actors on the current arbiter.
    pub fn start(db: &Database, config: &Config) -> anyhow::Result<Self> {
        let transport = Transport::from_config(&config.effects)?;
        let email = EmailActor::new(db.clone(), transport, config).start();
        let inventory = InventoryActor::new(db.clone()).start();
        let shipping = ShippingActor::new(db.clone(), &config.effects)?.start();
        Ok(Self {
            email,
            inventory,
            shipping,
        })
    }

    /// Hands an effect to the actor for its kind and waits for its answer.
    pub async fn perform(&self, effect: ClaimedEffect) -> Result<Effected, EffectError> {
        let kind = EffectKind::parse(&effect.kind).ok_or_else(|| {
            EffectError::Permanent(format!("no actor for effects of kind {:?}", effect.kind))
        })?;
        let message = Perform { effect, kind };
        let answer = match kind {
            EffectKind::Receipt | EffectKind::PaymentFailedEmail => self.email.send(message).await,
            EffectKind::Inventory => self.inventory.send(message).await,
            EffectKind::Shipment => self.shipping.send(message).await,
        };
        answer.map_err(|e| {
            EffectError::Retry(format!("the {} actor did not answer: {e}", kind.as_str()))
        })?
    }
}
