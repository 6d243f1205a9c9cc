//! Settings: defaults, then environment variables, then flags; then [`Settings::validate`]
//! turns them into a [`Config`] or one line naming the setting at fault.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::db::DatabaseUrl;

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The settings as given, before validation. Secrets' values are hidden from `--help`.
#[derive(Args, Clone, Default)]
pub struct Settings {
    /// Listen address.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:4242", global = true)]
    pub bind: String,
    /// Base of `success_url` and of links in emails.
    #[arg(
        long,
        env = "PUBLIC_URL",
        default_value = "http://localhost:4242",
        global = true
    )]
    pub public_url: String,
    /// `sqlite://PATH` or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://fulfilld.db",
        global = true
    )]
    pub database_url: String,
    /// `sk_test_…`, `sk_live_…` or a restricted `rk_…` key.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true, global = true)]
    pub stripe_secret_key: Option<String>,
    /// One or more `whsec_…` secrets, comma-separated (for rotation).
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub stripe_webhook_secret: Option<String>,
    /// Base URL of Stripe's API (for stripe-mock or a test double).
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com",
        global = true
    )]
    pub stripe_api_base: String,
    /// Calls per second to Stripe's API [default: 80 with a live key, 20 with a test key].
    #[arg(long, env = "STRIPE_MAX_RPS", global = true)]
    pub stripe_max_rps: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
    /// Seconds an idle session actor lives before it is passivated.
    #[arg(long, env = "SESSION_IDLE_SECS", default_value = "60", global = true)]
    pub session_idle_secs: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Stripe credentials, validated.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: Secret,
    pub webhook_secrets: Vec<Secret>,
    pub api_base: String,
    pub max_rps: u32,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub public_url: String,
    pub database_url: DatabaseUrl,
    pub stripe: StripeConfig,
    pub session_idle: Duration,
}

/// A setting that is missing or malformed; displays as one line naming it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

impl Settings {
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.log_format.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(invalid("LOG_FORMAT", "expected text or json")),
        }
    }

    /// Checks every setting; the first problem found is the error.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let bind = self.bind.parse().map_err(|_| {
            invalid(
                "BIND",
                format!("{:?} is not an address like 127.0.0.1:4242", self.bind),
            )
        })?;
        let public_url = self.public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid("PUBLIC_URL", "expected an http:// or https:// URL"));
        }
        let database_url = DatabaseUrl::parse(&self.database_url)
            .map_err(|problem| invalid("DATABASE_URL", problem))?;
        let session_idle = self
            .session_idle_secs
            .parse::<u64>()
            .ok()
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                invalid(
                    "SESSION_IDLE_SECS",
                    "expected a whole number of seconds above 0",
                )
            })?;
        Ok(Config {
            bind,
            public_url,
            database_url,
            stripe: self.stripe()?,
            session_idle,
        })
    }

    fn stripe(&self) -> Result<StripeConfig, ConfigError> {
        let key = self.stripe_secret_key.as_deref().unwrap_or_default().trim();
        if key.is_empty() {
            return Err(invalid(
                "STRIPE_SECRET_KEY",
                "not set. Set STRIPE_SECRET_KEY (sk_test_… from https://dashboard.stripe.com/test/apikeys) \
                 and STRIPE_WEBHOOK_SECRET (whsec_… printed by `stripe listen` or shown for your \
                 webhook endpoint in the Dashboard)",
            ));
        }
        let live = match key.split('_').take(2).collect::<Vec<_>>().as_slice() {
            ["sk" | "rk", "test"] => false,
            ["sk" | "rk", "live"] => true,
            _ => {
                return Err(invalid(
                    "STRIPE_SECRET_KEY",
                    "expected a key starting with sk_test_, sk_live_, rk_test_ or rk_live_",
                ));
            }
        };
        let webhook_secrets: Vec<Secret> = self
            .stripe_webhook_secret
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        if webhook_secrets.is_empty() {
            return Err(invalid(
                "STRIPE_WEBHOOK_SECRET",
                "required with STRIPE_SECRET_KEY: one or more whsec_… secrets, comma-separated",
            ));
        }
        if webhook_secrets
            .iter()
            .any(|s| !s.expose().starts_with("whsec_"))
        {
            return Err(invalid(
                "STRIPE_WEBHOOK_SECRET",
                "every secret starts with whsec_",
            ));
        }
        let api_base = self.stripe_api_base.trim_end_matches('/').to_owned();
        if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
            return Err(invalid(
                "STRIPE_API_BASE",
                "expected an http:// or https:// URL",
            ));
        }
        let max_rps = match &self.stripe_max_rps {
            None => {
                if live {
                    80
                } else {
                    20
                }
            }
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|rps| *rps > 0)
                .ok_or_else(|| {
                    invalid(
                        "STRIPE_MAX_RPS",
                        "expected a whole number of calls per second above 0",
                    )
                })?,
        };
        Ok(StripeConfig {
            secret_key: Secret::new(key),
            webhook_secrets,
            api_base,
            max_rps,
        })
    }
}
