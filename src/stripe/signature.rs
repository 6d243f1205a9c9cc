//! Verification of the `Stripe-Signature` header over the raw request body.
//!
//! Stripe signs `"{t}.{body}"` with HMAC-SHA256 under the endpoint's `whsec_` secret and
//! sends `t=…,v1=…[,v1=…][,v0=…]`. Any `v1` matching any configured secret is accepted, so
//! secrets can be rotated without dropping events.

use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::configuration::Secret;

type HmacSha256 = Hmac<Sha256>;

/// How far a signature's timestamp may be from the clock, in seconds.
pub const TOLERANCE_SECS: u64 = 300;

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature's timestamp is more than {TOLERANCE_SECS} s from now")]
    Stale,
    #[error("no v1 signature matches a configured webhook secret")]
    Mismatch,
}

/// Checks `header` against `body` for any of `secrets` at time `now` (Unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => {
                // A v1 that is not 32 bytes of hex cannot match; skip it, as Stripe's
                // libraries do, rather than refuse the others.
                if let Ok(bytes) = hex::decode(value)
                    && bytes.len() == 32
                {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    // `abs_diff`, not `(now - t).abs()`: a forged `t` near `i64::MIN` or `i64::MAX` must
    // be refused, not overflow.
    if now.abs_diff(timestamp) > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let matches = secrets.iter().any(|secret| {
        let expected = sign(secret.expose(), timestamp, body);
        // CtOutput compares in constant time.
        signatures.iter().any(|candidate| {
            expected
                == CtOutput::new(*hmac::digest::generic_array::GenericArray::from_slice(
                    candidate,
                ))
        })
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn sign(secret: &str, timestamp: i64, body: &[u8]) -> CtOutput<HmacSha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
}

/// The `Stripe-Signature` header Stripe would send for `body` at `timestamp`: used by the
/// Stripe simulator and the tests.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = sign(secret, timestamp, body).into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1"}"#;
    const NOW: i64 = 1_700_000_000;

    fn secrets(raw: &[&str]) -> Vec<Secret> {
        raw.iter().map(|s| Secret::new(*s)).collect()
    }

    #[test]
    fn a_signature_from_any_configured_secret_is_accepted() {
        let header = signature_header("whsec_new", NOW, BODY);
        assert_eq!(
            verify(
                Some(&header),
                BODY,
                &secrets(&["whsec_old", "whsec_new"]),
                NOW
            ),
            Ok(())
        );
    }

    #[test]
    fn one_valid_v1_among_several_is_enough() {
        let valid = signature_header("whsec_a", NOW, BODY);
        let v1 = valid.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        let header = format!("t={NOW},v1={},v1={v1},v0=abc", "00".repeat(32));
        assert_eq!(
            verify(Some(&header), BODY, &secrets(&["whsec_a"]), NOW),
            Ok(())
        );
    }

    #[test]
    fn tampered_stale_and_missing_signatures_are_refused() {
        let secrets = secrets(&["whsec_a"]);
        let header = signature_header("whsec_a", NOW, BODY);
        assert_eq!(
            verify(Some(&header), b"{}", &secrets, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, &secrets, NOW + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(None, BODY, &secrets, NOW),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("v1=00"), BODY, &secrets, NOW),
            Err(SignatureError::Malformed)
        );
        let wrong = signature_header("whsec_b", NOW, BODY);
        assert_eq!(
            verify(Some(&wrong), BODY, &secrets, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_at_the_integer_extremes_are_stale_not_an_overflow() {
        let secrets = secrets(&["whsec_a"]);
        for (timestamp, now) in [
            (i64::MIN, NOW),
            (i64::MAX, NOW),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (i64::MAX, 0),
            (i64::MIN, -1),
        ] {
            let header = signature_header("whsec_a", timestamp, BODY);
            assert_eq!(
                verify(Some(&header), BODY, &secrets, now),
                Err(SignatureError::Stale),
                "t={timestamp} at {now}"
            );
        }
        for timestamp in [i64::MAX, i64::MIN] {
            let header = signature_header("whsec_a", timestamp, BODY);
            assert_eq!(
                verify(Some(&header), BODY, &secrets, timestamp),
                Ok(()),
                "t={timestamp} at the same instant"
            );
        }
    }
}
