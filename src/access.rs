//! Download links that can be taken back: a signed, expiring token per grant.
//!
//! A catalog's `access_url` may hold `{token}`. Each time a link is shown (the landing
//! page, the JSON outcome, the receipt) the token is minted for the grant's session and
//! SKU, expiring at the start of the UTC day [`LINK_DAYS`] days on, so a page shown twice
//! in one day, or an email sent again after a crash, carries the same link. The token is
//! `base64url(session_id:expires_at:sku)` and `base64url(HMAC-SHA256)` of it, joined by a
//! dot, under `ACCESS_SIGNING_SECRET` (or a key kept in the database): a download server
//! verifies it offline, or asks `GET /api/access/{token}`, which also knows whether the
//! grant was suspended or revoked since.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{AccessGrant, Outcome};

/// How many days a link shown today stays valid, from the start of the next day.
pub const LINK_DAYS: i64 = 30;
const DAY_SECS: i64 = 86_400;

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaim {
    pub session_id: String,
    pub sku: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

/// Mints and checks access tokens under one key.
#[derive(Clone)]
pub struct AccessSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for AccessSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessSigner(…)")
    }
}

impl AccessSigner {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        let Ok(mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes a key of any length");
        };
        mac
    }

    /// The token for `sku` of session `session_id`, valid until `expires_at` (seconds).
    pub fn token(&self, session_id: &str, sku: &str, expires_at: i64) -> String {
        let payload = URL_SAFE_NO_PAD.encode(format!("{session_id}:{expires_at}:{sku}"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// What `token` names, if it was minted under this key (expired or not).
    pub fn verify(&self, token: &str) -> Option<AccessClaim> {
        let (payload, signature) = token.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).ok()?;
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let mut parts = payload.splitn(3, ':');
        let session_id = parts.next()?.to_owned();
        let expires_at = parts.next()?.parse().ok()?;
        let sku = parts.next()?.to_owned();
        Some(AccessClaim {
            session_id,
            sku,
            expires_at,
        })
    }

    /// `grant` of session `session_id` with the `{token}` of its link minted, as shown at
    /// `now` (seconds).
    pub fn signed(&self, grant: &AccessGrant, session_id: &str, now: i64) -> AccessGrant {
        let mut grant = grant.clone();
        if grant.url.contains("{token}") {
            let expires_at = (now.div_euclid(DAY_SECS) + 1 + LINK_DAYS) * DAY_SECS;
            let token = self.token(session_id, &grant.sku, expires_at);
            grant.url = grant.url.replace("{token}", &token);
        }
        grant
    }

    /// `grants` of `outcome` with their links' `{token}`s minted now.
    pub fn links<'a>(
        &self,
        outcome: &Outcome,
        grants: impl IntoIterator<Item = &'a AccessGrant>,
    ) -> Vec<AccessGrant> {
        let now = now_secs();
        grants
            .into_iter()
            .map(|grant| self.signed(grant, &outcome.session_id, now))
            .collect()
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    crate::db::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::GrantStatus;

    #[test]
    fn a_token_names_its_grant_and_any_change_to_it_is_refused() {
        let signer = AccessSigner::new(b"a key of thirty-two bytes or so.");
        let token = signer.token("cs_test_1", "EBOOK:2", 1_900_000_000);
        let claim = signer.verify(&token).expect("valid");
        assert_eq!(claim.session_id, "cs_test_1");
        assert_eq!(claim.sku, "EBOOK:2");
        assert_eq!(claim.expires_at, 1_900_000_000);
        let other = AccessSigner::new(b"another key entirely, just as long");
        assert_eq!(other.verify(&token), None);
        let (payload, signature) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode("cs_test_2:1900000000:EBOOK:2");
        assert_eq!(signer.verify(&format!("{forged}.{signature}")), None);
        assert_eq!(signer.verify(payload), None);
        assert_eq!(signer.verify("…"), None);
    }

    #[test]
    fn links_shown_on_one_day_are_the_same_and_expire_a_month_on() {
        let signer = AccessSigner::new(b"k");
        let grant = AccessGrant {
            sku: "EBOOK".into(),
            name: "E-book".into(),
            url: "https://dl.example/EBOOK?t={token}".into(),
            status: GrantStatus::Active,
        };
        let morning = signer.signed(
            &grant,
            "cs_test_1",
            1_800_000_000 - 1_800_000_000 % DAY_SECS,
        );
        let evening = signer.signed(
            &grant,
            "cs_test_1",
            1_800_000_000 - 1_800_000_000 % DAY_SECS + DAY_SECS - 1,
        );
        assert_eq!(morning.url, evening.url);
        let token = morning.url.split("t=").nth(1).unwrap();
        let claim = signer.verify(token).unwrap();
        assert!(claim.expires_at - 1_800_000_000 > LINK_DAYS * DAY_SECS);
    }
}
