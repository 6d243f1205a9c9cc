//! Signing operators in without server-side sessions, so any replica behind a load
//! balancer recognises a cookie another one issued.
//!
//! The cookie is `<expiry>.<nonce>.<mac>`: an expiry in Unix seconds, a random nonce, and
//! HMAC-SHA256 of `<expiry>.<nonce>` under `ADMIN_TOKEN`. Nothing is stored: a cookie is
//! valid while its MAC checks out and its expiry is ahead, so changing `ADMIN_TOKEN` signs
//! everyone out. Forms carry a CSRF token derived from the cookie the same way, so a page
//! of another site can neither read nor forge it.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header;
use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::configuration::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The cookie's name.
pub const COOKIE: &str = "fulfilld_admin";
/// How long a sign-in lasts.
pub const SIGNED_IN_FOR: Duration = Duration::from_secs(12 * 3600);
/// Random bytes in a cookie's nonce: two sign-ins in the same second get different cookies.
const NONCE_BYTES: usize = 16;
/// What a submitted token is keyed with before it is compared, so the comparison takes
/// the same time whatever its length.
const COMPARE_KEY: &[u8] = b"fulfilld admin sign-in";

/// The keys behind `/admin`'s cookies and forms.
pub struct AdminAuth {
    token: Secret,
    /// Adds `Secure` to the cookie: `PUBLIC_URL` is https.
    secure: bool,
}

impl AdminAuth {
    pub fn new(token: Secret, secure: bool) -> Self {
        Self { token, secure }
    }

    /// Whether `given` is `ADMIN_TOKEN`, compared in constant time.
    pub fn token_matches(&self, given: &str) -> bool {
        let digest = |text: &str| {
            let mut mac = keyed(COMPARE_KEY);
            mac.update(text.as_bytes());
            mac.finalize()
        };
        digest(given) == digest(self.token.expose())
    }

    /// A new cookie value, valid for [`SIGNED_IN_FOR`] from `now` (Unix seconds).
    pub fn issue(&self, now: i64) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|error| anyhow::anyhow!("no randomness for a sign-in nonce: {error}"))?;
        let expiry = now.saturating_add(secs(SIGNED_IN_FOR));
        let claim = format!("{expiry}.{}", hex::encode(nonce));
        let mac = hex::encode(self.mac(claim.as_bytes()).into_bytes());
        Ok(format!("{claim}.{mac}"))
    }

    /// Whether `cookie` was issued under this token and has not expired at `now`.
    pub fn is_valid(&self, cookie: &str, now: i64) -> bool {
        let Some((claim, mac)) = cookie.rsplit_once('.') else {
            return false;
        };
        let Some(expiry) = claim
            .split_once('.')
            .and_then(|(expiry, _)| expiry.parse::<i64>().ok())
        else {
            return false;
        };
        expiry > now && self.mac_matches(claim.as_bytes(), mac)
    }

    /// The CSRF token of the forms shown to the holder of `cookie`.
    pub fn csrf_token(&self, cookie: &str) -> String {
        hex::encode(self.mac(csrf_claim(cookie).as_bytes()).into_bytes())
    }

    /// Whether `given` is the CSRF token for `cookie`, compared in constant time.
    pub fn csrf_matches(&self, cookie: &str, given: &str) -> bool {
        self.mac_matches(csrf_claim(cookie).as_bytes(), given)
    }

    /// `Set-Cookie` signing the browser in with `value`.
    pub fn set_cookie(&self, value: &str) -> String {
        self.cookie_header(value, secs(SIGNED_IN_FOR))
    }

    /// `Set-Cookie` signing the browser out.
    pub fn clear_cookie(&self) -> String {
        self.cookie_header("", 0)
    }

    fn cookie_header(&self, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{COOKIE}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        )
    }

    fn mac(&self, message: &[u8]) -> CtOutput<HmacSha256> {
        let mut mac = keyed(self.token.expose().as_bytes());
        mac.update(message);
        mac.finalize()
    }

    fn mac_matches(&self, message: &[u8], given_hex: &str) -> bool {
        let Ok(given) = hex::decode(given_hex) else {
            return false;
        };
        let mut mac = keyed(self.token.expose().as_bytes());
        mac.update(message);
        // Constant time, and false for a MAC of the wrong length.
        mac.verify_slice(&given).is_ok()
    }
}

/// The admin cookie values a request carries, in order.
pub fn cookies(request: &HttpRequest) -> impl Iterator<Item = &str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn csrf_claim(cookie: &str) -> String {
    format!("csrf:{cookie}")
}

fn keyed(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: &str) -> AdminAuth {
        AdminAuth::new(Secret::new(token), false)
    }

    #[test]
    fn a_cookie_is_valid_until_it_expires_and_only_under_its_token() {
        let admin = auth("a-token-of-sixteen+");
        let cookie = admin.issue(1_000).unwrap();
        assert!(admin.is_valid(&cookie, 1_000));
        assert!(!admin.is_valid(&cookie, 1_000 + secs(SIGNED_IN_FOR)));
        assert!(!auth("another-token-of-16").is_valid(&cookie, 1_000));
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let admin = auth("a-token-of-sixteen+");
        let cookie = admin.issue(1_000).unwrap();
        let (expiry, rest) = cookie.split_once('.').unwrap();
        let later = expiry.parse::<i64>().unwrap() + 3600;
        for forged in [
            format!("{later}.{rest}"),
            format!("{cookie}0"),
            cookie.replace('.', ""),
            String::new(),
            "1.2.3".to_owned(),
        ] {
            assert!(!admin.is_valid(&forged, 1_000), "{forged} accepted");
        }
    }

    #[test]
    fn the_csrf_token_belongs_to_one_cookie() {
        let admin = auth("a-token-of-sixteen+");
        let (one, two) = (admin.issue(1_000).unwrap(), admin.issue(1_000).unwrap());
        assert_ne!(one, two);
        let token = admin.csrf_token(&one);
        assert!(admin.csrf_matches(&one, &token));
        assert!(!admin.csrf_matches(&two, &token));
        assert!(!admin.csrf_matches(&one, ""));
    }

    #[test]
    fn the_token_is_compared_whole() {
        let admin = auth("a-token-of-sixteen+");
        assert!(admin.token_matches("a-token-of-sixteen+"));
        assert!(!admin.token_matches("a-token-of-sixteen"));
        assert!(!admin.token_matches(""));
    }
}
