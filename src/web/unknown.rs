//! Session ids Stripe said it does not know, remembered for a while, so a flood of
//! made-up ids costs one Stripe call per id, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::SessionId;

/// How long an unknown id is answered 404 without asking Stripe again. A real session is
/// known to Stripe from the moment its id exists, so this delays nobody's order.
const REMEMBERED_FOR: Duration = Duration::from_secs(300);
/// Ids remembered at most; past it the oldest half is forgotten.
const MAX_REMEMBERED: usize = 100_000;

/// Ids Stripe answered `resource_missing` for, with when.
#[derive(Default)]
pub struct UnknownSessions {
    seen: Mutex<HashMap<SessionId, Instant>>,
}

impl UnknownSessions {
    /// Whether Stripe said recently that it does not know `id`.
    pub fn contains(&self, id: &SessionId) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|at| at.elapsed() < REMEMBERED_FOR)
    }

    /// Remembers that Stripe does not know `id`.
    pub fn insert(&self, id: SessionId) {
        let mut seen = self.lock();
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, at| at.elapsed() < REMEMBERED_FOR);
            if seen.len() >= MAX_REMEMBERED {
                let mut ages: Vec<Instant> = seen.values().copied().collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                seen.retain(|_, at| *at > cutoff);
            }
        }
        seen.insert(id, Instant::now());
    }

    /// Forgets `id`: a signed event just proved Stripe knows it (on a connected account,
    /// say, where a lookup on the platform found nothing).
    pub fn forget(&self, id: &SessionId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Instant>> {
        self.seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}
