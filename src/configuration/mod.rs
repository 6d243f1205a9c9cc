//! Settings: defaults, then environment variables, then flags; then [`Settings::validate`]
//! turns them into a [`Config`] or one line naming the setting at fault.

mod checkout;
mod effects;
pub mod file;
mod locale;
mod secret;
mod stripe;
mod telemetry;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

pub use checkout::{CheckoutConfig, CheckoutSettings, CheckoutUi};
pub use effects::{EffectSettings, EffectsConfig, decode_secret};
pub use locale::LocaleSettings;
pub use secret::Secret;
pub use stripe::StripeConfig;
pub use telemetry::{LogFormat, TelemetrySettings};

use crate::catalog::Catalog;
use crate::db::DatabaseUrl;

/// The shortest `ADMIN_TOKEN` accepted: guessing one is out of reach even unthrottled.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// The settings as given, before validation. Secrets' values are hidden from `--help`.
#[derive(Args, Clone)]
pub struct Settings {
    /// Listen address.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:4242", global = true)]
    pub bind: SocketAddr,
    /// A separate listen address for `GET /metrics`, so that it need not be public
    /// [default: `/metrics` on BIND].
    #[arg(long, env = "METRICS_BIND", global = true)]
    pub metrics_bind: Option<SocketAddr>,
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
    #[arg(
        long,
        env = "SANDBOX",
        default_value = "0",
        value_parser = parse_sandbox,
        global = true
    )]
    pub sandbox_anywhere: bool,
    /// Calls per second to Stripe's API [default: 80 with a live key, 20 with a test key].
    #[arg(
        long,
        env = "STRIPE_MAX_RPS",
        value_parser = clap::value_parser!(u32).range(1..=10_000),
        global = true
    )]
    pub stripe_max_rps: Option<u32>,
    /// The most of STRIPE_MAX_RPS that customers' landing-page lookups may take while
    /// webhooks wait, in percent.
    #[arg(
        long,
        env = "STRIPE_INTERACTIVE_SHARE",
        default_value = "50",
        value_parser = clap::value_parser!(u32).range(1..=100),
        global = true
    )]
    pub stripe_interactive_share: u32,
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
    /// Connected accounts (`acct_…`, comma-separated) that reconcile looks at besides
    /// those fulfilld has seen events or sessions of.
    #[arg(
        long,
        env = "STRIPE_ACCOUNTS",
        value_delimiter = ',',
        value_parser = crate::domain::AccountId::parse,
        global = true
    )]
    pub stripe_accounts: Vec<crate::domain::AccountId>,
    /// Proxies whose X-Forwarded-For names the client: addresses or networks,
    /// comma-separated [default: none; the peer address is the client].
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_proxy,
        global = true
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// The header `TRUSTED_PROXIES` name the client in: `x-forwarded-for`, or RFC 7239's
    /// `forwarded`. Only that one is read, whatever else a request carries.
    #[arg(
        long,
        env = "PROXY_HEADER",
        value_enum,
        default_value_t = ProxyHeader::XForwardedFor,
        global = true
    )]
    pub proxy_header: ProxyHeader,
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
    /// How long processed webhook events are kept before they are pruned (`30d`; at
    /// least 3 days, as long as Stripe retries a delivery; `0` keeps them for ever).
    /// Stripe keeps events 30 days.
    #[arg(
        long,
        env = "EVENT_RETENTION",
        default_value = "30d",
        value_parser = parse_retention,
        global = true
    )]
    pub event_retention: Duration,
    /// `text` or `json`.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Seconds an idle session actor lives before it is passivated.
    #[arg(
        long,
        env = "SESSION_IDLE_SECS",
        default_value = "60",
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        global = true
    )]
    pub session_idle_secs: u64,
    /// Sandbox mode: seconds a simulated bank debit takes to succeed or fail.
    #[arg(
        long,
        env = "SANDBOX_PAYMENT_DELAY_SECS",
        default_value = "5",
        value_parser = clap::value_parser!(u64).range(0..=3600),
        global = true
    )]
    pub sandbox_payment_delay_secs: u64,
    /// How often `serve` reconciles with Stripe (`15m`, `1h 30m`; at least a minute; `0`
    /// turns it off).
    #[arg(
        long,
        env = "RECONCILE_EVERY",
        default_value = "15m",
        value_parser = parse_interval,
        global = true
    )]
    pub reconcile_every: Duration,
    /// On SIGTERM or Ctrl-C, seconds that requests and effects in flight may take to
    /// finish before the effects are handed back to the next process.
    #[arg(
        long,
        env = "SHUTDOWN_GRACE_SECS",
        default_value = "10",
        value_parser = clap::value_parser!(u64).range(0..=3600),
        global = true
    )]
    pub shutdown_grace_secs: u64,
    /// Enables the operators' page at `/admin`, signed in with this token (16 characters
    /// or more) [default: no admin page].
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub effects: EffectSettings,
    #[command(flatten)]
    pub checkout: CheckoutSettings,
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    #[command(flatten)]
    pub locale: LocaleSettings,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// Where `/metrics` is served when not on `bind`.
    pub metrics_bind: Option<SocketAddr>,
    pub public_url: String,
    pub database_url: DatabaseUrl,
    pub stripe: StripeConfig,
    pub session_idle: Duration,
    pub catalog: Arc<Catalog>,
    pub effects: EffectsConfig,
    pub checkout: CheckoutConfig,
    /// How often `serve` reconciles with Stripe; `None` when turned off.
    pub reconcile_every: Option<Duration>,
    /// How long a shutdown waits for work in flight.
    pub shutdown_grace: Duration,
    /// Signs operators in to `/admin`; `None` turns the page off.
    pub admin_token: Option<Secret>,
    /// Stripe lookups a client may cause a minute.
    pub client_lookups_per_min: NonZeroU32,
    /// Proxies whose `X-Forwarded-For` (or `Forwarded`) is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The header they write.
    pub proxy_header: ProxyHeader,
    /// Webhook events carried out at once.
    pub webhook_workers: usize,
    /// How long processed events are kept; `None`: for ever.
    pub event_retention: Option<Duration>,
    /// How pages and emails write money.
    pub locale: crate::domain::Locale,
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
    /// Checks what the types alone cannot; the first problem found is the error.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let public_url = self.public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid("PUBLIC_URL", "expected an http:// or https:// URL"));
        }
        let database_url = self.database_url()?;
        let stripe = self.stripe(&public_url, self.bind)?;
        Ok(Config {
            bind: self.bind,
            metrics_bind: self.metrics_bind,
            checkout: self.checkout.validate(&stripe)?,
            stripe,
            public_url,
            database_url,
            session_idle: Duration::from_secs(self.session_idle_secs),
            catalog: Arc::new(self.effects.catalog()?),
            effects: self.effects.validate()?,
            reconcile_every: Some(self.reconcile_every).filter(|every| !every.is_zero()),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            admin_token: self.admin_token()?,
            client_lookups_per_min: NonZeroU32::new(self.client_lookups_per_min)
                .ok_or_else(|| invalid("CLIENT_LOOKUPS_PER_MIN", "expected 1 or more"))?,
            trusted_proxies: self.trusted_proxies.clone(),
            proxy_header: self.proxy_header,
            webhook_workers: usize::from(self.webhook_workers),
            event_retention: Some(self.event_retention).filter(|keep| !keep.is_zero()),
            locale: self.locale.locale,
        })
    }

    /// `ADMIN_TOKEN`, unless unset or empty; a short one is refused without being echoed.
    fn admin_token(&self) -> Result<Option<Secret>, ConfigError> {
        match self.admin_token.as_deref() {
            None | Some("") => Ok(None),
            Some(token) if token.chars().count() < MIN_ADMIN_TOKEN_CHARS => Err(invalid(
                "ADMIN_TOKEN",
                format!("expected at least {MIN_ADMIN_TOKEN_CHARS} characters"),
            )),
            Some(token) => Ok(Some(Secret::new(token))),
        }
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

/// The header trusted proxies name the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1`, as nginx, HAProxy and most load balancers write.
    XForwardedFor,
    /// RFC 7239: `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// Parses one `TRUSTED_PROXIES` entry: an address or a network (`10.0.0.0/8`).
pub fn parse_proxy(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{raw:?} is not an address or a network like 10.0.0.0/8"))
}

/// Parses a duration as `humantime` does (`90s`, `15m`, `1h 30m`, `3d`), or a bare number
/// of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    match raw.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(raw)
            .map_err(|error| format!("{error}; expected a duration like 90s, 15m, 1h 30m or 3d")),
    }
}

/// A period between runs of a whole pass: `0` (off), or a duration of a minute or more.
fn parse_interval(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        Duration::ZERO => Ok(Duration::ZERO),
        every if every < Duration::from_secs(60) => {
            Err("expected 0 (off) or a minute or more, like 15m".to_owned())
        }
        every => Ok(every),
    }
}

/// `EVENT_RETENTION`: 0 (for ever) or 3 days or more, so that a delivery Stripe retries is
/// still recognised as a duplicate.
fn parse_retention(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        Duration::ZERO => Ok(Duration::ZERO),
        keep if keep < Duration::from_secs(3 * 86_400) => {
            Err("expected 0 (keep for ever) or 3 days or more, like 30d".to_owned())
        }
        keep => Ok(keep),
    }
}

/// `SANDBOX`: a switch, where an empty value (`SANDBOX=` in a compose file) is off.
fn parse_sandbox(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        _ => Err("expected 1 or 0".to_owned()),
    }
}
