//! Signing operators in: a random cookie whose sign-in is stored, so that any replica
//! behind a load balancer recognises it, and signing out or a new `ADMIN_TOKEN` ends it
//! on every one at once.
//!
//! The cookie's value is 32 random bytes. The database keeps only their SHA-256, with the
//! CSRF token of the sign-in's forms (32 more random bytes) and a digest of the
//! `ADMIN_TOKEN` it was made with. The token is no key to anything: a cookie is valid
//! because its sign-in is stored and unexpired, not because it is signed.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::configuration::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The cookie's name.
pub const COOKIE: &str = "fulfilld_admin";
/// How long a sign-in lasts.
pub const SIGNED_IN_FOR: Duration = Duration::from_secs(12 * 3600);
/// Admin cookies of one request looked up at most (a browser sends one, or a stale one
/// beside it).
const COOKIES_LOOKED_AT: usize = 3;
/// Random bytes in a cookie's value, and in a CSRF token.
const RANDOM_BYTES: usize = 32;
/// What a submitted token is keyed with before it is compared, so the comparison takes
/// the same time whatever its length.
const COMPARE_KEY: &[u8] = b"fulfilld admin sign-in";

/// The token behind `/admin`, and how its cookies are made.
pub struct AdminAuth {
    token: Secret,
    /// What sign-ins made with `token` are stored with.
    token_digest: String,
    /// Adds `Secure` to the cookie: `PUBLIC_URL` is https.
    secure: bool,
}

/// A sign-in just made: the cookie's value for the browser, and what is stored of it.
pub struct NewSignIn {
    pub cookie: String,
    /// The digest of `cookie`, which the sign-in is stored under.
    pub id: String,
    pub csrf: String,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
}

impl AdminAuth {
    pub fn new(token: Secret, secure: bool) -> Self {
        let token_digest = digest(&format!("fulfilld admin token\n{}", token.expose()));
        Self {
            token,
            token_digest,
            secure,
        }
    }

    /// Whether `given` is `ADMIN_TOKEN`, compared in constant time.
    pub fn token_matches(&self, given: &str) -> bool {
        let keyed = |text: &str| {
            let mut mac = <HmacSha256 as Mac>::new_from_slice(COMPARE_KEY)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(text.as_bytes());
            mac.finalize()
        };
        keyed(given) == keyed(self.token.expose())
    }

    /// What sign-ins made with the current token are stored with.
    pub fn token_digest(&self) -> &str {
        &self.token_digest
    }

    /// A new sign-in, valid for [`SIGNED_IN_FOR`] from `now` (ms since the epoch).
    pub fn sign_in(&self, now: i64) -> anyhow::Result<NewSignIn> {
        let cookie = random()?;
        Ok(NewSignIn {
            id: session_id(&cookie),
            csrf: random()?,
            expires_at: now.saturating_add(millis(SIGNED_IN_FOR)),
            cookie,
        })
    }

    /// `Set-Cookie` signing the browser in with `value`.
    pub fn set_cookie(&self, value: &str) -> String {
        self.cookie(value, SIGNED_IN_FOR)
    }

    /// `Set-Cookie` signing the browser out.
    pub fn clear_cookie(&self) -> String {
        self.cookie("", Duration::ZERO)
    }

    fn cookie(&self, value: &str, max_age: Duration) -> String {
        let seconds = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        Cookie::build(COOKIE, value.to_owned())
            .path("/admin")
            .max_age(time::Duration::seconds(seconds))
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure)
            .finish()
            .to_string()
    }
}

/// What the sign-in of cookie value `cookie` is stored under.
pub fn session_id(cookie: &str) -> String {
    digest(cookie)
}

/// Whether `given` is the CSRF token `expected`, compared by their digests, so the time
/// it takes tells nothing of `expected`.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    Sha256::digest(expected.as_bytes()) == Sha256::digest(given.as_bytes())
}

/// The admin cookie values a request carries that could be one, in order: at most
/// [`COOKIES_LOOKED_AT`], so that a request stuffed with cookies costs no more lookups.
pub fn cookies(request: &HttpRequest) -> Vec<String> {
    let plausible = |value: &str| {
        value.len() == 2 * RANDOM_BYTES && value.bytes().all(|b| b.is_ascii_hexdigit())
    };
    request
        .cookies()
        .map(|cookies| {
            cookies
                .iter()
                .filter(|cookie| cookie.name() == COOKIE && plausible(cookie.value()))
                .take(COOKIES_LOOKED_AT)
                .map(|cookie| cookie.value().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn random() -> anyhow::Result<String> {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("no randomness for a sign-in: {error}"))?;
    Ok(hex::encode(bytes))
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: &str) -> AdminAuth {
        AdminAuth::new(Secret::new(token), false)
    }

    #[test]
    fn each_sign_in_is_random_and_stored_under_its_cookies_digest_only() {
        let admin = auth("a-token-of-sixteen+");
        let (one, two) = (admin.sign_in(1_000).unwrap(), admin.sign_in(1_000).unwrap());
        assert_ne!(one.cookie, two.cookie);
        assert_ne!(one.csrf, two.csrf);
        assert_eq!(one.id, session_id(&one.cookie));
        assert_ne!(one.id, one.cookie);
        assert_eq!(one.expires_at, 1_000 + 12 * 3600 * 1000);
        assert!(csrf_matches(&one.csrf, &one.csrf));
        assert!(!csrf_matches(&one.csrf, &two.csrf) && !csrf_matches(&one.csrf, ""));
    }

    #[test]
    fn another_token_has_another_digest_and_neither_shows_the_token() {
        let (one, two) = (auth("a-token-of-sixteen+"), auth("another-token-of-16"));
        assert_ne!(one.token_digest(), two.token_digest());
        assert!(!one.token_digest().contains("sixteen"));
    }

    #[test]
    fn the_token_is_compared_whole() {
        let admin = auth("a-token-of-sixteen+");
        assert!(admin.token_matches("a-token-of-sixteen+"));
        assert!(!admin.token_matches("a-token-of-sixteen"));
        assert!(!admin.token_matches(""));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_admin() {
        let set = AdminAuth::new(Secret::new("a-token-of-sixteen+"), true).set_cookie("abc");
        for attribute in [
            "fulfilld_admin=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/admin",
            "Max-Age=43200",
            "Secure",
        ] {
            assert!(set.contains(attribute), "{attribute} missing: {set}");
        }
    }
}
