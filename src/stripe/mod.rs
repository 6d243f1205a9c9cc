//! Everything that speaks to or hears from Stripe.

mod client;
pub mod event;
pub mod gateway;
pub mod listing;
pub mod pacer;
pub mod signature;

pub use gateway::{GatewayError, StripeGateway};
pub use listing::MadeRefund;
pub use pacer::{Pacer, Priority, Urgency};

/// The Stripe API version every request names (`Stripe-Version`): async-stripe's.
pub fn pinned_api_version() -> &'static str {
    stripe_shared::version::VERSION.as_str()
}
