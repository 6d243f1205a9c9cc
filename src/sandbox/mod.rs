//! The Stripe simulator: Stripe's wire format (built from Stripe's own example objects),
//! hosted checkout pages and signed webhooks. Sandbox mode mounts it inside fulfilld so a
//! newcomer needs no Stripe account; the test suite runs it on a port of its own.

mod api;
mod creating;
mod disputes;
mod double;
mod hosted;
mod objects;
mod refunds;
mod simulator;
mod state;

pub use double::StripeDouble;
pub use simulator::{RefundSpec, Simulator};
pub use state::{EventRecord, SessionSpec};
