//! Settings of the checkouts fulfilld opens: how long their stock is held, and who may
//! ask for one through the API.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, Secret, invalid};

/// The shortest `API_TOKEN` accepted.
const MIN_API_TOKEN_CHARS: usize = 32;

/// Settings of the checkouts fulfilld opens.
#[derive(Args, Clone)]
pub struct CheckoutSettings {
    /// Minutes a session fulfilld creates stays open, its physical goods held for it
    /// meanwhile (30, Stripe's least, to 1440).
    #[arg(
        long,
        env = "RESERVATION_MINUTES",
        default_value = "30",
        value_parser = clap::value_parser!(u64).range(30..=1440),
        global = true
    )]
    pub reservation_minutes: u64,
    /// Bearer token of `POST /api/checkout-sessions` for the merchant's own back end (32
    /// characters or more) [default: only the storefront's own pages may call it].
    #[arg(long, env = "API_TOKEN", hide_env_values = true, global = true)]
    pub api_token: Option<String>,
}

/// The validated checkout settings.
#[derive(Debug, Clone)]
pub struct CheckoutConfig {
    /// How long a session stays open, and its stock held.
    pub reservation: Duration,
    /// What a caller of the API from outside the storefront shows.
    pub api_token: Option<Secret>,
}

impl CheckoutSettings {
    pub fn validate(&self) -> Result<CheckoutConfig, ConfigError> {
        Ok(CheckoutConfig {
            reservation: Duration::from_secs(self.reservation_minutes * 60),
            api_token: match self.api_token.as_deref() {
                None | Some("") => None,
                Some(token) if token.chars().count() < MIN_API_TOKEN_CHARS => {
                    return Err(invalid(
                        "API_TOKEN",
                        format!("expected at least {MIN_API_TOKEN_CHARS} characters"),
                    ));
                }
                Some(token) => Some(Secret::new(token)),
            },
        })
    }
}
