//! Failed sign-ins are counted, so `ADMIN_TOKEN` cannot be guessed at speed: per client
//! address (an IPv6 client is its /64), and for all clients together (an attacker with
//! many addresses), over a fixed window. A client over its own count is refused before
//! its token is compared, so even the right token gets no answer until the window ends.
//! Past the overall count, every client that has failed once is refused too; one that has
//! not (an operator, while someone else guesses) still gets its one try.
//!
//! The counts are per process; behind a load balancer each replica keeps its own, which
//! multiplies the pace by the number of replicas and still leaves a 16-character token
//! far out of reach.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::web::clients::key;

/// How long failures are remembered.
const WINDOW: Duration = Duration::from_secs(600);
/// Failures one client address may make in a window.
const PER_CLIENT: u32 = 10;
/// Failures all clients together may make in a window. It also bounds the memory used.
const OVERALL: u32 = 100;

/// The failed sign-ins of the current window.
pub struct SignInThrottle {
    strikes: Mutex<Strikes>,
}

struct Strikes {
    since: Instant,
    overall: u32,
    by_client: HashMap<Option<IpAddr>, u32>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        Self {
            strikes: Mutex::new(Strikes {
                since: Instant::now(),
                overall: 0,
                by_client: HashMap::new(),
            }),
        }
    }
}

impl SignInThrottle {
    /// How long `client` must wait before it may try again, if it is over a count.
    pub fn refused(&self, client: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let strikes = self.current(now);
        let own = strikes
            .by_client
            .get(&client.map(key))
            .copied()
            .unwrap_or(0);
        (own >= PER_CLIENT || (strikes.overall >= OVERALL && own > 0))
            .then(|| WINDOW.saturating_sub(now.duration_since(strikes.since)))
    }

    /// Counts a failed sign-in from `client`.
    pub fn fail(&self, client: Option<IpAddr>, now: Instant) {
        let mut strikes = self.current(now);
        strikes.overall = strikes.overall.saturating_add(1);
        let own = strikes.by_client.entry(client.map(key)).or_default();
        *own = own.saturating_add(1);
    }

    /// The counts, started afresh when the window has passed.
    fn current(&self, now: Instant) -> MutexGuard<'_, Strikes> {
        let mut strikes = self
            .strikes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if now.duration_since(strikes.since) >= WINDOW {
            strikes.since = now;
            strikes.overall = 0;
            strikes.by_client.clear();
        }
        strikes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_refused_after_its_failures_until_the_window_passes() {
        let throttle = SignInThrottle::default();
        let (start, client) = (Instant::now(), Some(IpAddr::from([192, 0, 2, 1])));
        for _ in 0..PER_CLIENT {
            assert_eq!(throttle.refused(client, start), None);
            throttle.fail(client, start);
        }
        let wait = throttle.refused(client, start).expect("refused");
        assert!(
            wait <= WINDOW && wait > WINDOW - Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            throttle.refused(Some(IpAddr::from([192, 0, 2, 2])), start),
            None
        );
        assert_eq!(throttle.refused(client, start + WINDOW), None);
    }

    #[test]
    fn past_the_overall_count_clients_that_failed_are_refused_and_others_not() {
        let throttle = SignInThrottle::default();
        let start = Instant::now();
        for n in 0..OVERALL {
            throttle.fail(Some(IpAddr::from(n.to_be_bytes())), start);
        }
        let guesser = Some(IpAddr::from([198, 51, 100, 7]));
        assert_eq!(throttle.refused(guesser, start), None, "a first try");
        throttle.fail(guesser, start);
        assert!(throttle.refused(guesser, start).is_some());
        // An operator who has not failed still gets in while the guessing goes on.
        let operator = Some(IpAddr::from([203, 0, 113, 9]));
        assert_eq!(throttle.refused(operator, start), None);
    }
}
