//! Settings of the checkouts fulfilld opens: Stripe's hosted page or its embedded form,
//! how long their stock is held, and who may ask for one through the API.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{ConfigError, Secret, StripeConfig, invalid};

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
    /// `hosted`: customers pay on Stripe's page; `embedded`: on Stripe's form, mounted
    /// in the shop's own page.
    #[arg(
        long,
        env = "CHECKOUT_UI",
        value_enum,
        default_value = "hosted",
        global = true
    )]
    pub checkout_ui: CheckoutUi,
    /// `pk_test_…` or `pk_live_…`, for Stripe.js: required by `CHECKOUT_UI=embedded` with
    /// a real key.
    #[arg(long, env = "STRIPE_PUBLISHABLE_KEY", global = true)]
    pub stripe_publishable_key: Option<String>,
}

/// Where customers pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckoutUi {
    /// Stripe's hosted page, reached by a redirect.
    Hosted,
    /// Stripe's embedded form, mounted in the storefront with Stripe.js.
    Embedded,
}

/// The validated checkout settings.
#[derive(Debug, Clone)]
pub struct CheckoutConfig {
    /// How long a session stays open, and its stock held.
    pub reservation: Duration,
    /// What a caller of the API from outside the storefront shows.
    pub api_token: Option<Secret>,
    pub ui: CheckoutUi,
    /// What the storefront gives Stripe.js; the sandbox's stand-in takes any.
    pub publishable_key: Option<String>,
}

impl CheckoutSettings {
    pub fn validate(&self, stripe: &StripeConfig) -> Result<CheckoutConfig, ConfigError> {
        let publishable_key = self
            .stripe_publishable_key
            .as_deref()
            .map(str::trim)
            .filter(|key| !key.is_empty());
        let publishable_key = match (publishable_key, stripe.sandbox.is_some()) {
            (Some(key), false) => {
                let mode = if stripe.livemode {
                    "pk_live_"
                } else {
                    "pk_test_"
                };
                if !key.starts_with(mode) {
                    return Err(invalid(
                        "STRIPE_PUBLISHABLE_KEY",
                        format!("expected a {mode} key, in the secret key's mode"),
                    ));
                }
                Some(key.to_owned())
            }
            (None, false) if self.checkout_ui == CheckoutUi::Embedded => {
                return Err(invalid(
                    "STRIPE_PUBLISHABLE_KEY",
                    "required with CHECKOUT_UI=embedded, for Stripe.js",
                ));
            }
            (None, false) => None,
            (_, true) => Some("pk_test_sandbox".to_owned()),
        };
        Ok(CheckoutConfig {
            ui: self.checkout_ui,
            publishable_key,
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
