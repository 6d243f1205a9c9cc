//! Settings of the side effects: catalog, mail, shipping and retries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use clap::builder::BoolishValueParser;
use lettre::message::Mailbox;

use super::{ConfigError, Secret, invalid};
use crate::catalog::Catalog;

/// Settings of the side effects: catalog, mail, shipping and retries.
#[derive(Args, Clone)]
pub struct EffectSettings {
    /// Catalog file (TOML) [default: catalog.toml when present].
    #[arg(long, env = "CATALOG", global = true)]
    pub catalog: Option<String>,
    /// `smtp://…` or `smtps://…`, with credentials [default: .eml files under MAIL_DIR].
    #[arg(long, env = "SMTP_URL", hide_env_values = true, global = true)]
    pub smtp_url: Option<String>,
    /// Messages a process may have handed to the mail server and not yet recorded as sent
    /// (the SMTP sync gap): a crash repeats at most this many receipts. Raise it for a
    /// mail server slow to answer, up to the 8 connections a process keeps.
    #[arg(
        long,
        env = "SMTP_SYNC_GAP",
        default_value = "1",
        value_parser = clap::value_parser!(u8).range(1..=8),
        global = true
    )]
    pub smtp_sync_gap: u8,
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
    #[arg(
        long,
        env = "SEND_RECEIPTS",
        default_value = "true",
        value_parser = BoolishValueParser::new(),
        global = true
    )]
    pub send_receipts: bool,
    /// Warehouse or 3PL endpoint for shipments [default: recorded for manual handling].
    #[arg(
        long,
        env = "SHIPPING_WEBHOOK_URL",
        hide_env_values = true,
        global = true
    )]
    pub shipping_webhook_url: Option<String>,
    /// Where access grants and revocations are POSTed [default: nowhere].
    #[arg(
        long,
        env = "ACCESS_WEBHOOK_URL",
        hide_env_values = true,
        global = true
    )]
    pub access_webhook_url: Option<String>,
    /// `whsec_…`: signs every POST to the warehouse and the access system the Standard
    /// Webhooks way [default: unsigned, with a warning].
    #[arg(
        long,
        env = "OUTBOUND_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub outbound_webhook_secret: Option<String>,
    /// Signs the `{token}` of access links [default: a secret kept in the database].
    #[arg(
        long,
        env = "ACCESS_SIGNING_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub access_signing_secret: Option<String>,
    /// Attempts at an effect before it is marked dead.
    #[arg(
        long,
        env = "EFFECT_MAX_ATTEMPTS",
        default_value = "15",
        value_parser = clap::value_parser!(u32).range(1..=1000),
        global = true
    )]
    pub effect_max_attempts: u32,
    /// Delay before an effect's first retry, doubled for each further one (capped at 1 h).
    #[arg(
        long,
        env = "EFFECT_BACKOFF_MS",
        default_value = "1000",
        value_parser = clap::value_parser!(u64).range(1..=3_600_000),
        global = true
    )]
    pub effect_backoff_ms: u64,
    /// Time allowed for one attempt at an effect, waiting for a connection included.
    #[arg(
        long,
        env = "EFFECT_TIMEOUT_SECS",
        default_value = "30",
        value_parser = clap::value_parser!(u64).range(1..=3600),
        global = true
    )]
    pub effect_timeout_secs: u64,
    /// Lease an attempt holds on its effect, renewed while it runs; how soon another
    /// process takes over the effects of one that died.
    #[arg(
        long,
        env = "EFFECT_LEASE_SECS",
        default_value = "5",
        value_parser = clap::value_parser!(u64).range(1..=3600),
        global = true
    )]
    pub effect_lease_secs: u64,
}

/// Side-effect settings, validated.
#[derive(Debug, Clone)]
pub struct EffectsConfig {
    pub smtp_url: Option<Secret>,
    /// Messages let into the SMTP sync gap at once.
    pub smtp_sync_gap: usize,
    pub mail_dir: PathBuf,
    pub mail_from: Mailbox,
    pub send_receipts: bool,
    pub shipping_webhook_url: Option<Secret>,
    pub access_webhook_url: Option<Secret>,
    /// `whsec_…`, checked to decode.
    pub outbound_webhook_secret: Option<Secret>,
    pub access_signing_secret: Option<Secret>,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub lease: Duration,
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

    pub(super) fn validate(&self) -> Result<EffectsConfig, ConfigError> {
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
        let http_url = |name: &'static str, value: &Option<String>| {
            let url = non_empty(value);
            match url {
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    Err(invalid(name, "expected an http:// or https:// URL"))
                }
                url => Ok(url.map(Secret::new)),
            }
        };
        let shipping_webhook_url = http_url("SHIPPING_WEBHOOK_URL", &self.shipping_webhook_url)?;
        let access_webhook_url = http_url("ACCESS_WEBHOOK_URL", &self.access_webhook_url)?;
        let outbound_webhook_secret = non_empty(&self.outbound_webhook_secret);
        if outbound_webhook_secret.is_some_and(|secret| decode_secret(secret).is_none()) {
            return Err(invalid(
                "OUTBOUND_WEBHOOK_SECRET",
                "expected whsec_ followed by base64 (a Standard Webhooks secret)",
            ));
        }
        let access_signing_secret = non_empty(&self.access_signing_secret);
        if access_signing_secret.is_some_and(|secret| secret.len() < 32) {
            return Err(invalid(
                "ACCESS_SIGNING_SECRET",
                "expected at least 32 characters",
            ));
        }
        Ok(EffectsConfig {
            smtp_url: smtp_url.map(Secret::new),
            smtp_sync_gap: usize::from(self.smtp_sync_gap),
            mail_dir: PathBuf::from(&self.mail_dir),
            mail_from,
            send_receipts: self.send_receipts,
            shipping_webhook_url,
            access_webhook_url,
            outbound_webhook_secret: outbound_webhook_secret.map(Secret::new),
            access_signing_secret: access_signing_secret.map(Secret::new),
            max_attempts: self.effect_max_attempts,
            backoff: Duration::from_millis(self.effect_backoff_ms),
            timeout: Duration::from_secs(self.effect_timeout_secs),
            lease: Duration::from_secs(self.effect_lease_secs),
        })
    }
}

const DEFAULT_CATALOG: &str = "catalog.toml";

/// The key of a Standard Webhooks secret (`whsec_` and base64), if it is one.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()?;
    (key.len() >= 16).then_some(key)
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
