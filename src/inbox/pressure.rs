//! How busy the acknowledgements are, and how background work gives way to them: never
//! the reverse.
//!
//! Two rules. Before it claims more, background work waits while the lane is busy, a
//! while at most ([`Pressure::give_way`]). And while the lane is busy, or was a moment
//! ago, only one event job a core runs at once ([`Pressure::turn`]): in a sale the
//! fulfilments go on, few at a time, and the cores go to the acknowledgements. Without
//! that, dozens of fulfilments each worth a few queries take the cores from the lane's
//! one connection, and a customer waits on Stripe's page.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::db::millis;

/// Deliveries in flight (received and not answered yet) beyond which the lane is busy.
/// At 1,000 deliveries/s answered in 5 ms, 5 are in flight; 32 means they are coming
/// faster than they are answered, or are being answered slowly.
const BUSY_AT: usize = 32;
/// The longest background work gives way before it takes its next job all the same, so
/// that a sale lasting longer than this still sees fulfilments go on.
const GIVE_WAY_AT_MOST: Duration = Duration::from_millis(250);
/// Event jobs that run at once while the lane is busy, at least: one a core.
const BUSY_TURNS: usize = 2;
/// How long the lane counts as busy after it last was: a sale's deliveries come in waves,
/// and the fulfilments let loose in each trough would slow the next wave's answers.
const BUSY_FOR: Duration = Duration::from_secs(1);
/// How often a job waiting for a turn looks whether the lane has become calm.
const CALM_CHECK: Duration = Duration::from_millis(50);

/// How busy the acknowledgements are.
pub struct Pressure {
    /// Deliveries received and not answered yet.
    in_flight: AtomicUsize,
    /// Told when `in_flight` falls to [`BUSY_AT`] or below.
    calm: Notify,
    /// When `in_flight` was last above [`BUSY_AT`], in ms since `started`.
    busy_at: AtomicI64,
    started: Instant,
    /// The turns event jobs take while the lane is busy.
    turns: Arc<Semaphore>,
}

impl Default for Pressure {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            calm: Notify::new(),
            busy_at: AtomicI64::new(0),
            started: Instant::now(),
            turns: Arc::new(Semaphore::new(busy_turns())),
        }
    }
}

/// A delivery counted in flight for as long as its handler holds it (see
/// [`Pressure::arriving`]), however the handler ends.
pub struct Arrival {
    pressure: Arc<Pressure>,
}

impl Drop for Arrival {
    fn drop(&mut self) {
        let was = self.pressure.in_flight.fetch_sub(1, Ordering::SeqCst);
        if was > BUSY_AT {
            // Busy until this moment: the moment after counts from here.
            self.pressure.stamp_busy();
        }
        if was == BUSY_AT + 1 {
            // One waiter at a time: each passes the calm on as it goes (see `give_way`),
            // so background work resumes gradually, not all at once.
            self.pressure.calm.notify_one();
        }
    }
}

/// A job's turn while the lane is busy, given back when dropped.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Pressure {
    /// Counts a delivery in flight until the returned guard is dropped.
    pub fn arriving(this: &Arc<Self>) -> Arrival {
        if this.in_flight.fetch_add(1, Ordering::SeqCst) >= BUSY_AT {
            this.stamp_busy();
        }
        Arrival {
            pressure: Arc::clone(this),
        }
    }

    /// Waits, [`GIVE_WAY_AT_MOST`] at most, while more than [`BUSY_AT`] deliveries are
    /// in flight.
    pub async fn give_way(&self) {
        let busy = || self.in_flight.load(Ordering::SeqCst) > BUSY_AT;
        if !busy() {
            return;
        }
        let until = Instant::now() + GIVE_WAY_AT_MOST;
        // A calm told while nobody waited is kept (`notify_one`) and may be stale by
        // now: each wake-up is checked against the count.
        while busy() {
            let calm = self.calm.notified();
            if tokio::time::timeout_at(until, calm).await.is_err() {
                return;
            }
        }
        self.calm.notify_one();
    }

    /// None while the lane is calm. While it is busy, or was within [`BUSY_FOR`], one of
    /// the turns (one a core), for the job to hold until it ends; the job waits for one,
    /// in the order it asked, for as long as the lane stays busy and the turns taken.
    pub async fn turn(&self) -> Option<Turn> {
        if !self.busy() {
            return None;
        }
        // One acquisition for the whole wait, so the job keeps its place in the queue.
        let acquire = Arc::clone(&self.turns).acquire_owned();
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => {
                    // The semaphore is never closed.
                    return permit.ok().map(|permit| Turn { _permit: permit });
                }
                () = tokio::time::sleep(CALM_CHECK) => {
                    if !self.busy() {
                        return None;
                    }
                }
            }
        }
    }

    fn busy(&self) -> bool {
        if self.in_flight.load(Ordering::SeqCst) > BUSY_AT {
            return true;
        }
        let busy_at = self.busy_at.load(Ordering::SeqCst);
        busy_at > 0 && self.now().saturating_sub(busy_at) < millis(BUSY_FOR)
    }

    fn stamp_busy(&self) {
        self.busy_at.fetch_max(self.now(), Ordering::SeqCst);
    }

    /// Milliseconds since `started`, at least 1, so that 0 means never busy.
    fn now(&self) -> i64 {
        millis(self.started.elapsed()).max(1)
    }
}

/// One turn a core, [`BUSY_TURNS`] at least.
fn busy_turns() -> usize {
    std::thread::available_parallelism().map_or(BUSY_TURNS, |cores| cores.get().max(BUSY_TURNS))
}

#[cfg(test)]
mod tests;
