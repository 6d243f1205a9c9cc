//! The actor layer: a registry of per-session actors that serialize attempts.

pub mod registry;
pub mod session;

pub use registry::Sessions;
