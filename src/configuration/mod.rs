//! Settings: defaults, then environment variables, then flags; then [`Settings::validate`]
//! turns them into a [`Config`] or one line naming the setting at fault.

mod effects;
mod stripe;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

pub use effects::{EffectSettings, EffectsConfig};
pub use stripe::StripeConfig;

use crate::catalog::Catalog;
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
    /// `sqlite://PATH` or `postgres://…` [default: sqlite://fulfilld.db, or
    /// sqlite://fulfilld-sandbox.db in sandbox mode].
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// `sk_test_…`, `sk_live_…` or a restricted `rk_…` key [default: sandbox mode, with
    /// a built-in Stripe simulator].
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
    /// `1` allows sandbox mode (no STRIPE_SECRET_KEY) on a BIND that is not a loopback
    /// address; without it, a missing key there stops start-up.
    #[arg(long, env = "SANDBOX", default_value = "0", global = true)]
    pub sandbox_anywhere: String,
    /// Calls per second to Stripe's API [default: 80 with a live key, 20 with a test key].
    #[arg(long, env = "STRIPE_MAX_RPS", global = true)]
    pub stripe_max_rps: Option<String>,
    /// The most of STRIPE_MAX_RPS that customers' landing-page lookups may take while
    /// webhooks wait, in percent.
    #[arg(
        long,
        env = "STRIPE_INTERACTIVE_SHARE",
        default_value = "50",
        global = true
    )]
    pub stripe_interactive_share: String,
    /// Stripe lookups one client address may cause a minute, on the landing page and the
    /// JSON API (only sessions not recorded yet cost one); past it, 429 with Retry-After.
    #[arg(
        long,
        env = "CLIENT_LOOKUPS_PER_MIN",
        default_value = "30",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
        global = true
    )]
    pub client_lookups_per_min: u32,
    /// Proxies whose X-Forwarded-For names the client: addresses or networks,
    /// comma-separated [default: none; the peer address is the client].
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = crate::web::parse_proxy,
        global = true
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Webhook events carried out at once; as many again times 16 wait in memory, the
    /// rest in the database until there is room.
    #[arg(
        long,
        env = "WEBHOOK_WORKERS",
        default_value = "64",
        value_parser = clap::value_parser!(u16).range(1..=4096),
        global = true
    )]
    pub webhook_workers: u16,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
    /// Seconds an idle session actor lives before it is passivated.
    #[arg(long, env = "SESSION_IDLE_SECS", default_value = "60", global = true)]
    pub session_idle_secs: String,
    /// Sandbox mode: seconds a simulated bank debit takes to succeed or fail.
    #[arg(
        long,
        env = "SANDBOX_PAYMENT_DELAY_SECS",
        default_value = "5",
        global = true
    )]
    pub sandbox_payment_delay_secs: String,
    /// How often `serve` reconciles with Stripe (`15m`, `1h`; `0` turns it off).
    #[arg(long, env = "RECONCILE_EVERY", default_value = "15m", global = true)]
    pub reconcile_every: String,
    /// On SIGTERM or Ctrl-C, seconds that requests and effects in flight may take to
    /// finish before the effects are handed back to the next process.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value = "10", global = true)]
    pub shutdown_grace_secs: String,
    #[command(flatten)]
    pub effects: EffectSettings,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub public_url: String,
    pub database_url: DatabaseUrl,
    pub stripe: StripeConfig,
    pub session_idle: Duration,
    pub catalog: Arc<Catalog>,
    pub effects: EffectsConfig,
    /// How often `serve` reconciles with Stripe; `None` when turned off.
    pub reconcile_every: Option<Duration>,
    /// How long a shutdown waits for work in flight.
    pub shutdown_grace: Duration,
    /// Stripe lookups a client may cause a minute.
    pub client_lookups_per_min: NonZeroU32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Webhook events carried out at once.
    pub webhook_workers: usize,
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
        let database_url = self.database_url()?;
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
        let reconcile_every = match parse_duration(&self.reconcile_every) {
            Some(Duration::ZERO) => None,
            Some(every) => Some(every),
            None => {
                return Err(invalid(
                    "RECONCILE_EVERY",
                    "expected a duration like 15m, 1h or 0 (off)",
                ));
            }
        };
        let shutdown_grace = self
            .shutdown_grace_secs
            .parse::<u64>()
            .ok()
            .filter(|secs| *secs <= 3600)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                invalid(
                    "SHUTDOWN_GRACE_SECS",
                    "expected a whole number of seconds from 0 to 3600",
                )
            })?;
        Ok(Config {
            bind,
            stripe: self.stripe(&public_url, bind)?,
            public_url,
            database_url,
            session_idle,
            catalog: Arc::new(self.effects.catalog()?),
            effects: self.effects.validate()?,
            reconcile_every,
            shutdown_grace,
            client_lookups_per_min: NonZeroU32::new(self.client_lookups_per_min)
                .ok_or_else(|| invalid("CLIENT_LOOKUPS_PER_MIN", "expected 1 or more"))?,
            trusted_proxies: self.trusted_proxies.clone(),
            webhook_workers: usize::from(self.webhook_workers.max(1)),
        })
    }

    /// True without a Stripe key: fulfilld then talks to its built-in simulator.
    pub fn sandbox(&self) -> bool {
        self.stripe_secret_key
            .as_deref()
            .is_none_or(|key| key.trim().is_empty())
    }

    /// `DATABASE_URL`, or the default, which keeps sandbox data apart from real data.
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        let default = if self.sandbox() {
            "sqlite://fulfilld-sandbox.db"
        } else {
            "sqlite://fulfilld.db"
        };
        DatabaseUrl::parse(self.database_url.as_deref().unwrap_or(default))
            .map_err(|problem| invalid("DATABASE_URL", problem))
    }
}

/// Parses `90s`, `15m`, `72h`, `3d` or a number of seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let (number, unit) = raw
        .find(|c: char| !c.is_ascii_digit())
        .map_or((raw, "s"), |at| raw.split_at(at));
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}
