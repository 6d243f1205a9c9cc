//! Settings: defaults, then environment variables, then flags; then [`Settings::validate`]
//! turns them into a [`Config`] or one line naming the setting at fault.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use lettre::message::Mailbox;

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
    #[command(flatten)]
    pub effects: EffectSettings,
}

/// Settings of the side effects: catalog, mail, shipping and retries.
#[derive(Args, Clone, Default)]
pub struct EffectSettings {
    /// Catalog file (TOML) [default: catalog.toml when present].
    #[arg(long, env = "CATALOG", global = true)]
    pub catalog: Option<String>,
    /// `smtp://…` or `smtps://…`, with credentials [default: .eml files under MAIL_DIR].
    #[arg(long, env = "SMTP_URL", hide_env_values = true, global = true)]
    pub smtp_url: Option<String>,
    /// Where mail is saved as `.eml` files when SMTP_URL is unset.
    #[arg(long, env = "MAIL_DIR", default_value = "mail", global = true)]
    pub mail_dir: String,
    /// Sender of receipts and notices.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "Shop <shop@localhost>",
        global = true
    )]
    pub mail_from: String,
    /// Whether fulfilld sends its own receipts (turn off if Stripe's suffice).
    #[arg(long, env = "SEND_RECEIPTS", default_value = "true", global = true)]
    pub send_receipts: String,
    /// Warehouse or 3PL endpoint for shipments [default: recorded for manual handling].
    #[arg(
        long,
        env = "SHIPPING_WEBHOOK_URL",
        hide_env_values = true,
        global = true
    )]
    pub shipping_webhook_url: Option<String>,
    /// Attempts at an effect before it is marked dead.
    #[arg(long, env = "EFFECT_MAX_ATTEMPTS", default_value = "15", global = true)]
    pub effect_max_attempts: String,
    /// Delay before an effect's first retry, doubled for each further one (capped at 1 h).
    #[arg(long, env = "EFFECT_BACKOFF_MS", default_value = "1000", global = true)]
    pub effect_backoff_ms: String,
    /// Time allowed for one attempt at an effect.
    #[arg(long, env = "EFFECT_TIMEOUT_SECS", default_value = "30", global = true)]
    pub effect_timeout_secs: String,
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
    pub catalog: Arc<Catalog>,
    pub effects: EffectsConfig,
}

/// Side-effect settings, validated.
#[derive(Debug, Clone)]
pub struct EffectsConfig {
    pub smtp_url: Option<Secret>,
    pub mail_dir: PathBuf,
    pub mail_from: Mailbox,
    pub send_receipts: bool,
    pub shipping_webhook_url: Option<Secret>,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
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
            catalog: Arc::new(self.effects.catalog()?),
            effects: self.effects.validate()?,
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

impl EffectSettings {
    /// The catalog named by `CATALOG`, else `catalog.toml` when present, else none.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let path = match &self.catalog {
            Some(path) => PathBuf::from(path),
            None if Path::new(DEFAULT_CATALOG).exists() => PathBuf::from(DEFAULT_CATALOG),
            None => return Ok(Catalog::default()),
        };
        Catalog::load(&path).map_err(|problem| invalid("CATALOG", problem))
    }

    fn validate(&self) -> Result<EffectsConfig, ConfigError> {
        let smtp_url = non_empty(&self.smtp_url);
        if let Some(url) = smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return Err(invalid("SMTP_URL", "expected smtp://… or smtps://…"));
        }
        let mail_from = self.mail_from.parse::<Mailbox>().map_err(|_| {
            invalid(
                "MAIL_FROM",
                "expected an address like Shop <shop@example.com>",
            )
        })?;
        let send_receipts = match self.send_receipts.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(invalid("SEND_RECEIPTS", "expected true or false")),
        };
        let shipping_webhook_url = non_empty(&self.shipping_webhook_url);
        if let Some(url) = shipping_webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "SHIPPING_WEBHOOK_URL",
                "expected an http:// or https:// URL",
            ));
        }
        let whole = |setting: &'static str, raw: &str, unit: &str| {
            raw.parse::<u32>()
                .ok()
                .filter(|value| *value > 0)
                .ok_or_else(|| {
                    invalid(
                        setting,
                        format!("expected a whole number of {unit} above 0"),
                    )
                })
        };
        Ok(EffectsConfig {
            smtp_url: smtp_url.map(Secret::new),
            mail_dir: PathBuf::from(&self.mail_dir),
            mail_from,
            send_receipts,
            shipping_webhook_url: shipping_webhook_url.map(Secret::new),
            max_attempts: whole("EFFECT_MAX_ATTEMPTS", &self.effect_max_attempts, "attempts")?,
            backoff: Duration::from_millis(
                whole("EFFECT_BACKOFF_MS", &self.effect_backoff_ms, "milliseconds")?.into(),
            ),
            timeout: Duration::from_secs(
                whole("EFFECT_TIMEOUT_SECS", &self.effect_timeout_secs, "seconds")?.into(),
            ),
        })
    }
}

const DEFAULT_CATALOG: &str = "catalog.toml";

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
