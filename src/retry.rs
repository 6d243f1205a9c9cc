//! The one backoff policy for everything fulfilld retries: Stripe calls and effects.

use std::time::Duration;

/// Exponential backoff with jitter: `base` doubled per attempt after the first, capped at
/// `cap`, then a random delay in the upper half of that window, so that retries spread
/// out instead of arriving together.
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let window = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(20))
        .min(cap);
    window.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_the_upper_half_and_stop_at_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for (attempt, window) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let delay = backoff(base, cap, attempt).as_millis();
            assert!(
                (window / 2..=window).contains(&delay),
                "attempt {attempt}: {delay} ms outside {}..={window}",
                window / 2
            );
        }
    }
}
