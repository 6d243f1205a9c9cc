//! The engine's vocabulary: what a Checkout Session is to fulfilld and what became of it.

mod account;
mod delivery;
mod money;
mod outcome;
mod session_id;

pub use account::AccountId;
pub use delivery::{
    AccessGrant, EffectKind, EffectStatus, Shipment, ShipmentItem, ShipmentStatus, ShippingAddress,
};
pub use money::format_amount;
pub use outcome::{
    ItemLine, LineItem, Outcome, PaymentStatus, SessionState, SessionSummary, Status,
};
pub use session_id::SessionId;
