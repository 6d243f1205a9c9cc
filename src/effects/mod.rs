//! Side effects, carried out after the transaction that enqueued them.
//!
//! A fulfillment (or a payment failure) writes effect rows in its own transaction; the
//! [`EffectDispatcher`] claims each due row under a short lease, hands it to the actor for
//! its kind as an [`Attempt`], keeps the lease alive while the attempt runs, and records
//! how it went. Every actor is idempotent, because an effect can be attempted more than
//! once: the receipt has a deterministic `Message-ID`, stock moves once per (session, SKU)
//! in the same transaction that marks the effect done, and the warehouse gets the same
//! `Idempotency-Key` on every retry.
//!
//! Deadlines: an attempt has `EFFECT_TIMEOUT_SECS` in all, waiting for a connection
//! included. Its talk with a mail server or the warehouse runs inside [`Attempt::io`],
//! which drops it — closing its connection — at the deadline, or at once when the
//! dispatcher cancels the attempt because its lease could not be renewed or the process
//! is shutting down. Database work is never dropped halfway (a cancelled transaction would
//! stay open on its connection); it is bounded by the database's own timeouts and fenced
//! by the attempt's lease instead, so a late write changes nothing.
//!
//! Error policy: an actor answers [`EffectError::Retry`] for anything that may pass
//! (network, 5xx, 429, a deadline, a full mailbox) and [`EffectError::Permanent`] for what
//! never will (a refused address, a 4xx). The dispatcher logs each failure once, where it
//! decides what happens next.

mod access;
mod attempt;
mod dispatcher;
mod email;
mod inventory;
mod mail;
pub mod outbound;
mod settle;
mod shipping;
mod smtp;

use actix::{Actor, Addr, Message};
use std::sync::Arc;
use tokio::sync::Notify;

pub use attempt::Attempt;
pub use dispatcher::{EffectDispatcher, Effects, MAX_IN_FLIGHT, Shutdown};
pub use mail::Transport;

use crate::access::AccessSigner;
use crate::configuration::Config;
use crate::db::Database;
use crate::domain::EffectKind;
use access::AccessActor;
use email::{Email, EmailActor};
use inventory::InventoryActor;
use outbound::Outbound;
use shipping::ShippingActor;

/// Asks the email actor for one email.
#[derive(Debug, Message)]
#[rtype(result = "Result<Effected, EffectError>")]
pub struct SendEmail {
    pub attempt: Attempt,
    pub email: Email,
}

/// Asks the inventory actor to move a session's stock.
#[derive(Debug, Message)]
#[rtype(result = "Result<Effected, EffectError>")]
pub struct MoveStock(pub Attempt);

/// Asks the shipping actor to tell the warehouse.
#[derive(Debug, Message)]
#[rtype(result = "Result<Effected, EffectError>")]
pub struct Ship(pub Attempt);

/// Asks the shipping actor to ask the warehouse to cancel a shipment.
#[derive(Debug, Message)]
#[rtype(result = "Result<Effected, EffectError>")]
pub struct CancelShipment(pub Attempt);

/// Asks the access actor to deliver an access notice.
#[derive(Debug, Message)]
#[rtype(result = "Result<Effected, EffectError>")]
pub struct TellAccess(pub Attempt);

/// How an attempt succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effected {
    /// Done; the dispatcher marks the row done.
    Done,
    /// Done, and the row was marked done in the actor's own (fenced) transaction.
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
    /// Another effect of the session must end first: handed back uncounted, and tried
    /// again when that one is next due (milliseconds since the epoch), but not sooner
    /// than the base backoff. Nothing was sent.
    #[error("{0}")]
    Wait(String, i64),
    /// The dispatcher cancelled the attempt's I/O; it knows why.
    #[error("the attempt was cancelled")]
    Cancelled,
    /// The attempt's lease passed to another attempt before it could record anything.
    #[error("the effect's lease passed to another attempt")]
    Superseded,
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
    access: Addr<AccessActor>,
}

impl EffectActors {
    /// Starts the actors on the current arbiter.
    pub fn start(db: &Database, config: &Config, access: &AccessSigner) -> anyhow::Result<Self> {
        let transport = Transport::from_config(&config.effects)?;
        let email = EmailActor::new(db.clone(), transport, config, access.clone()).start();
        let inventory = InventoryActor::new(db.clone()).start();
        let outbound = Outbound::new(&config.effects)?;
        let shipping = ShippingActor::new(db.clone(), outbound.clone(), &config.effects).start();
        let access = AccessActor::new(db.clone(), outbound, &config.effects).start();
        Ok(Self {
            email,
            inventory,
            shipping,
            access,
        })
    }

    /// Hands an attempt to the actor for its kind and waits for its answer.
    pub async fn perform(&self, attempt: Attempt) -> Result<Effected, EffectError> {
        let kind = attempt.effect.kind;
        let answer = match kind {
            EffectKind::Receipt => {
                let email = Email::Receipt;
                self.email.send(SendEmail { attempt, email }).await
            }
            EffectKind::PaymentFailedEmail => {
                let email = Email::PaymentFailed;
                self.email.send(SendEmail { attempt, email }).await
            }
            EffectKind::RefundEmail => {
                let email = Email::Refunded;
                self.email.send(SendEmail { attempt, email }).await
            }
            EffectKind::Inventory => self.inventory.send(MoveStock(attempt)).await,
            EffectKind::Shipment => self.shipping.send(Ship(attempt)).await,
            EffectKind::ShipmentCancel => self.shipping.send(CancelShipment(attempt)).await,
            EffectKind::AccessNotice => self.access.send(TellAccess(attempt)).await,
        };
        answer.map_err(|e| EffectError::Retry(format!("the {kind} actor did not answer: {e}")))?
    }
}
