//! A Stripe API double that speaks Stripe's wire format, built from Stripe's own example
//! objects. The test suite drives fulfilld against it over real HTTP; it is the seed of
//! the sandbox mode's simulator.

mod double;
mod objects;

pub use double::{SessionSpec, StripeDouble};
