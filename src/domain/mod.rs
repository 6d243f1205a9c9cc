//! The engine's vocabulary: what a Checkout Session is to fulfilld and what became of it.

mod money;
mod outcome;
mod session_id;

pub use money::format_amount;
pub use outcome::{LineItem, Outcome, PaymentStatus, SessionState, SessionSummary, Status};
pub use session_id::SessionId;
