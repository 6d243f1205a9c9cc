//! POSTs to the merchant's systems (the warehouse, the access system), signed the
//! Standard Webhooks way.
//!
//! Every POST carries `webhook-id` (the same on every retry, and sent as
//! `Idempotency-Key` too), `webhook-timestamp` (seconds) and, with
//! `OUTBOUND_WEBHOOK_SECRET`, `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` under the secret's key, so any Standard Webhooks library
//! verifies it. 2xx is success; 408, 409, 429, 5xx and network faults are retried; any
//! other 4xx is permanent.

use anyhow::Context as _;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;

use super::{Attempt, EffectError};
use crate::configuration::{EffectsConfig, decode_secret};

/// A client for the merchant's endpoints, with the signing key if there is one.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    key: Option<Vec<u8>>,
}

impl Outbound {
    pub fn new(config: &EffectsConfig) -> anyhow::Result<Self> {
        // No timeout of reqwest's own: the attempt's deadline bounds the whole request.
        let client = reqwest::Client::builder()
            .user_agent(concat!("fulfilld/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build the outbound HTTP client")?;
        let key = config
            .outbound_webhook_secret
            .as_ref()
            .and_then(|secret| decode_secret(secret.expose()));
        let sends = config.shipping_webhook_url.is_some() || config.access_webhook_url.is_some();
        if sends && key.is_none() {
            tracing::warn!(
                "OUTBOUND_WEBHOOK_SECRET is not set: POSTs to SHIPPING_WEBHOOK_URL and \
                 ACCESS_WEBHOOK_URL go unsigned, and their receivers cannot tell them from forgeries"
            );
        }
        Ok(Self { client, key })
    }

    /// POSTs `body` (JSON) to `url` as message `id` within `attempt`'s time: a 2xx is
    /// success, and any other answer an error ([`judge`]). `whom` names the receiver in
    /// errors ("the warehouse").
    pub async fn post(
        &self,
        attempt: &Attempt,
        url: &str,
        id: &str,
        body: String,
        whom: &str,
    ) -> Result<StatusCode, EffectError> {
        let status = self.answer(attempt, url, id, body, whom).await?;
        judge(status, whom)
    }

    /// What [`Self::post`] does, up to the receiver's answer, whatever it is.
    pub async fn answer(
        &self,
        attempt: &Attempt,
        url: &str,
        id: &str,
        body: String,
        whom: &str,
    ) -> Result<StatusCode, EffectError> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut request = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", id)
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(key) = &self.key {
            request = request.header("webhook-signature", sign(key, id, timestamp, &body));
        }
        let request = request.body(body).send();
        if !attempt.commit() {
            return Err(EffectError::Retry(format!(
                "too little of the attempt's time was left to ask {whom}"
            )));
        }
        let response = attempt
            .io(async {
                request.await.map_err(|e| {
                    EffectError::Retry(format!("{whom} did not answer: {}", e.without_url()))
                })
            })
            .await?;
        Ok(response.status())
    }
}

/// A receiver's answer `status`: a 2xx is success; 408, 409, 429 and 5xx may pass and are
/// retried; any other 4xx never will.
pub fn judge(status: StatusCode, whom: &str) -> Result<StatusCode, EffectError> {
    if status.is_success() {
        return Ok(status);
    }
    let reason = format!("{whom} answered {status}");
    let permanent = status.is_client_error()
        && ![
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::CONFLICT,
            StatusCode::TOO_MANY_REQUESTS,
        ]
        .contains(&status);
    Err(if permanent {
        EffectError::Permanent(reason)
    } else {
        EffectError::Retry(reason)
    })
}

/// The `webhook-signature` of message `id` sent at `timestamp` with `body`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes a key of any length");
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signatures_match_the_standard_webhooks_reference() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
