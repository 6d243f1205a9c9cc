//! Stripe credentials, or sandbox mode when there are none.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, Secret, Settings, invalid};

/// The simulated Stripe's pace (Stripe's test-mode limit).
const SANDBOX_MAX_RPS: u32 = 25;

/// Stripe credentials, validated.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: Secret,
    pub webhook_secrets: Vec<Secret>,
    pub api_base: String,
    pub max_rps: u32,
    /// The most of `max_rps` that customers' lookups may take while background work
    /// waits, in percent.
    pub interactive_share: u32,
    /// Whether the key is a live-mode key (sessions are `cs_live_…`).
    pub livemode: bool,
    /// Sandbox mode: the simulator's bank-debit delay. The serving process mounts the
    /// simulator under `/sandbox`; other commands reach it there through `PUBLIC_URL`.
    /// `secret_key` is then only a candidate: the key kept in the database is used.
    pub sandbox: Option<Duration>,
    /// Connected accounts reconcile looks at besides those it has seen (`STRIPE_ACCOUNTS`).
    pub accounts: Vec<crate::domain::AccountId>,
}

impl Settings {
    pub(super) fn stripe(
        &self,
        public_url: &str,
        bind: SocketAddr,
    ) -> Result<StripeConfig, ConfigError> {
        let key = self.stripe_secret_key.as_deref().unwrap_or_default().trim();
        if key.is_empty() {
            // A deploy whose key failed to mount must not serve a simulated Stripe that
            // anyone could "pay" through.
            if !bind.ip().is_loopback() && !self.sandbox_anywhere {
                return Err(invalid(
                    "STRIPE_SECRET_KEY",
                    format!(
                        "not set, and BIND {bind} is not a loopback address: set \
                         STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET, or SANDBOX=1 to run the \
                         simulated Stripe there on purpose"
                    ),
                ));
            }
            // Served beyond this machine, the simulator lets anyone "pay": what it
            // fulfils must not reach real customers' mailboxes or a real warehouse.
            let real = [
                ("SMTP_URL", self.effects.smtp_url.is_some()),
                (
                    "SHIPPING_WEBHOOK_URL",
                    self.effects.shipping_webhook_url.is_some(),
                ),
                (
                    "ACCESS_WEBHOOK_URL",
                    self.effects.access_webhook_url.is_some(),
                ),
            ];
            if self.sandbox_anywhere
                && let Some((name, _)) = real.iter().find(|(_, set)| *set)
            {
                return Err(invalid(
                    name,
                    "not allowed with SANDBOX=1: anyone could pay the simulated Stripe and                      send real mail, shipments or access; unset it, or set STRIPE_SECRET_KEY",
                ));
            }
            return self.sandbox_stripe(public_url);
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
        let max_rps = self.stripe_max_rps.unwrap_or(if live { 80 } else { 20 });
        Ok(StripeConfig {
            secret_key: Secret::new(key),
            webhook_secrets,
            api_base,
            max_rps,
            interactive_share: self.stripe_interactive_share,
            livemode: live,
            sandbox: None,
            accounts: self.stripe_accounts.clone(),
        })
    }

    fn sandbox_stripe(&self, public_url: &str) -> Result<StripeConfig, ConfigError> {
        Ok(StripeConfig {
            secret_key: Secret::new(format!("sk_test_sandbox_{}", random_hex()?)),
            // A fresh secret per run: only this process's simulator signs with it.
            webhook_secrets: vec![Secret::new(format!("whsec_sandbox_{}", random_hex()?))],
            api_base: format!("{public_url}/sandbox"),
            max_rps: SANDBOX_MAX_RPS,
            interactive_share: self.stripe_interactive_share,
            livemode: false,
            sandbox: Some(Duration::from_secs(self.sandbox_payment_delay_secs)),
            accounts: self.stripe_accounts.clone(),
        })
    }
}

/// 128 bits from the operating system's generator, in hex.
fn random_hex() -> Result<String, ConfigError> {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes).map_err(|error| {
        invalid(
            "STRIPE_SECRET_KEY",
            format!("no randomness for the sandbox: {error}"),
        )
    })?;
    Ok(hex::encode(bytes))
}
