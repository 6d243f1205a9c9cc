//! The engine's vocabulary: what a Checkout Session is to fulfilld and what became of it.

mod account;
mod delivery;
mod locale;
mod money;
mod notice;
mod outcome;
mod refund;
mod session_id;

pub use account::AccountId;
pub use delivery::{
    AccessGrant, EffectKind, EffectStatus, GrantStatus, Shipment, ShipmentItem, ShipmentStatus,
    ShippingAddress, Tell,
};
pub use locale::Locale;
pub use money::{format_amount, format_money, parse_amount};
pub use notice::{AccessChange, AccessItem, AccessNotice, ShipmentNotice, ShipmentRequest};
pub use outcome::{
    ItemLine, LineItem, Outcome, PaymentStatus, SessionState, SessionSummary, Status,
};
pub use refund::{
    DisputeStatus, NewsKind, Progress, RefundStatus, ReversalNews, refunded_items, refunded_skus,
    status_after,
};
pub use session_id::SessionId;
