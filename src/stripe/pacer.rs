//! Paces calls to Stripe's API under a configured rate, customers first.
//!
//! A token bucket refills at `rate` per second and holds at most a quarter second's worth,
//! so a burst never exceeds Stripe's per-second limit. Each free token goes to the oldest
//! interactive waiter (a customer on the landing page) before any background waiter (the
//! webhook backlog, replays, reconcile).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::metrics::{METRICS, PacerPriority, seconds};

/// Who is waiting for a call.
#[derive(Debug, Clone)]
pub enum Priority {
    /// A person is waiting on the answer.
    Interactive,
    /// Nobody is watching: webhooks, replays, reconcile.
    Background,
    /// Background work a person may start waiting on: it goes ahead of the backlog as
    /// soon as its [`Urgency`] is raised, even while it is already waiting.
    Raisable(Arc<Urgency>),
}

/// Whether a person is waiting on a session's work; raised once, for the session actor's
/// life.
#[derive(Debug, Default)]
pub struct Urgency {
    raised: AtomicBool,
    notify: Notify,
}

impl Urgency {
    /// A customer is waiting: calls of this session go ahead of the backlog from now on.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }
}

type Waiter = oneshot::Sender<()>;

/// Waiters queued for each priority; past it, a caller waits for a place in the queue.
const QUEUE_DEPTH: usize = 1024;

/// A handle to the pacing task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Pacer {
    interactive: mpsc::Sender<Waiter>,
    background: mpsc::Sender<Waiter>,
    rate: Arc<watch::Sender<f64>>,
}

impl Pacer {
    /// Starts a pacer allowing `rate` calls per second on the current runtime, of which
    /// interactive calls take at most `interactive_share` percent while background calls
    /// wait (all of it when none do).
    pub fn start(rate: u32, interactive_share: u32) -> Self {
        let (interactive, interactive_rx) = mpsc::channel(QUEUE_DEPTH);
        let (background, background_rx) = mpsc::channel(QUEUE_DEPTH);
        let share = f64::from(interactive_share.clamp(1, 100)) / 100.0;
        let (rate, rate_rx) = watch::channel(f64::from(rate.max(1)));
        METRICS.pacer_rate.set(*rate.borrow());
        tokio::spawn(run(rate_rx, share, interactive_rx, background_rx));
        Self {
            interactive,
            background,
            rate: Arc::new(rate),
        }
    }

    /// Paces calls at `rate` per second from now on: this process's share of a budget
    /// shared with other replicas.
    pub fn set_rate(&self, rate: f64) {
        let rate = rate.max(MIN_RATE);
        METRICS.pacer_rate.set(rate);
        self.rate.send_if_modified(|current| {
            let changed = *current != rate;
            *current = rate;
            changed
        });
    }

    /// Calls per second allowed now.
    pub fn rate(&self) -> f64 {
        *self.rate.borrow()
    }

    /// Waits until a call may be made.
    pub async fn acquire(&self, priority: &Priority) {
        match priority {
            Priority::Interactive => wait(&self.interactive, INTERACTIVE).await,
            Priority::Background => wait(&self.background, BACKGROUND).await,
            Priority::Raisable(urgency) => {
                let raised = urgency.notify.notified();
                tokio::pin!(raised);
                // Registered before the flag is read, so a raise in between is not missed.
                raised.as_mut().enable();
                if urgency.is_raised() {
                    return wait(&self.interactive, INTERACTIVE).await;
                }
                tokio::select! {
                    () = wait(&self.background, BACKGROUND) => {}
                    // The background place is given up; its token goes to the next waiter.
                    () = raised => wait(&self.interactive, INTERACTIVE).await,
                }
            }
        }
    }
}

const INTERACTIVE: PacerPriority = PacerPriority {
    priority: "interactive",
};
const BACKGROUND: PacerPriority = PacerPriority {
    priority: "background",
};
/// The slowest pace: one call every ten seconds.
const MIN_RATE: f64 = 0.1;

/// A caller counted in the queue's gauge until it is served or gives up.
struct Queued(Gauge);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn wait(queue: &mpsc::Sender<Waiter>, priority: PacerPriority) {
    let started = Instant::now();
    let queued = Queued(METRICS.pacer_queue.get_or_create(&priority).clone());
    queued.0.inc();
    let (tx, rx) = oneshot::channel();
    // If the pacing task is gone the runtime is shutting down; do not hold calls back.
    if queue.send(tx).await.is_ok() {
        let _ = rx.await;
    }
    drop(queued);
    METRICS
        .pacer_wait
        .get_or_create(&priority)
        .observe(seconds(started.elapsed()));
}

async fn run(
    mut rates: watch::Receiver<f64>,
    share: f64,
    mut interactive: mpsc::Receiver<Waiter>,
    mut background: mpsc::Receiver<Waiter>,
) {
    let capacity_at = |rate: f64| (rate / 4.0).max(1.0);
    let mut tokens = capacity_at(*rates.borrow());
    // Interactive calls also spend from a bucket refilled at `share` of the rate, so a
    // flood of lookups (made-up session ids) can never take the whole budget from the
    // webhooks waiting behind it.
    let mut interactive_tokens = tokens;
    let mut refilled = Instant::now();
    loop {
        // Read afresh each turn: another replica may have come or gone.
        let rate = *rates.borrow_and_update();
        let interval = Duration::from_secs_f64(1.0 / rate);
        let capacity = capacity_at(rate);
        let now = Instant::now();
        let earned = now.duration_since(refilled).as_secs_f64() * rate;
        tokens = (tokens + earned).min(capacity);
        interactive_tokens = (interactive_tokens + earned * share).min(capacity);
        refilled = now;
        if tokens < 1.0 {
            tokio::select! {
                () = tokio::time::sleep(interval.mul_f64(1.0 - tokens)) => {}
                // A larger share need not wait out the smaller one's interval.
                Ok(()) = rates.changed() => {}
            }
            continue;
        }
        let interactive_may = interactive_tokens >= 1.0 || background.is_empty();
        let (waiter, is_interactive) = tokio::select! {
            biased;
            Some(waiter) = interactive.recv(), if interactive_may => (waiter, true),
            Some(waiter) = background.recv() => (waiter, false),
            // Background work arrived while interactive calls were over their share.
            () = tokio::time::sleep(interval), if !interactive_may => continue,
            else => return,
        };
        // A waiter that gave up does not use its token.
        if waiter.send(()).is_ok() {
            tokens -= 1.0;
            if is_interactive {
                interactive_tokens = (interactive_tokens - 1.0).max(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller waiting at `priority`, who reports `name` on `done` once served.
    fn wait_in_turn(
        pacer: &Pacer,
        priority: Priority,
        name: String,
        done: &mpsc::UnboundedSender<String>,
    ) {
        let (pacer, done) = (pacer.clone(), done.clone());
        tokio::spawn(async move {
            pacer.acquire(&priority).await;
            let _ = done.send(name);
        });
    }

    /// The names of the first `count` callers served, in order.
    async fn served(done: &mut mpsc::UnboundedReceiver<String>, count: usize) -> Vec<String> {
        let mut order = Vec::new();
        while order.len() < count {
            order.push(done.recv().await.unwrap_or_default());
        }
        order
    }

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_burst_are_spread_at_the_rate() {
        let pacer = Pacer::start(20, 50);
        let start = Instant::now();
        for _ in 0..25 {
            pacer.acquire(&Priority::Background).await;
        }
        // 5 from the burst, then 20 more at 20/s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_waiters_go_before_the_backlog() {
        let pacer = Pacer::start(10, 100);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for i in 0..20 {
            wait_in_turn(
                &pacer,
                Priority::Background,
                format!("background {i}"),
                &done_tx,
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        wait_in_turn(
            &pacer,
            Priority::Interactive,
            "interactive".into(),
            &done_tx,
        );
        let order = served(&mut done_rx, 21).await;
        let position = order
            .iter()
            .position(|s| s == "interactive")
            .unwrap_or(usize::MAX);
        // Only the tokens already granted before it arrived go first.
        assert!(
            position <= 3,
            "interactive call served at position {position}: {order:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_background_call_goes_ahead_once_raised() {
        let pacer = Pacer::start(10, 100);
        let urgency = Arc::new(Urgency::default());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for i in 0..20 {
            wait_in_turn(
                &pacer,
                Priority::Background,
                format!("background {i}"),
                &done_tx,
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let priority = Priority::Raisable(Arc::clone(&urgency));
        wait_in_turn(&pacer, priority, "raised".into(), &done_tx);
        // Last in the backlog, until a customer asks.
        tokio::time::sleep(Duration::from_millis(500)).await;
        urgency.raise();
        let order = served(&mut done_rx, 21).await;
        let position = order.iter().position(|s| s == "raised");
        assert!(
            position.is_some_and(|p| p <= 8),
            "raised call served at {position:?}: {order:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_interactive_calls_leaves_background_work_its_share() {
        let pacer = Pacer::start(10, 50);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for (priority, count) in [(Priority::Interactive, 100), (Priority::Background, 100)] {
            for _ in 0..count {
                let (pacer, done, priority) = (pacer.clone(), done_tx.clone(), priority.clone());
                tokio::spawn(async move {
                    pacer.acquire(&priority).await;
                    let _ = done.send(matches!(priority, Priority::Background));
                });
            }
        }
        // Ten seconds of tokens: about a hundred calls.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut background = 0;
        let mut all = 0;
        while let Ok(was_background) = done_rx.try_recv() {
            all += 1;
            background += usize::from(was_background);
        }
        assert!((95..=105).contains(&all), "{all} calls in 10 s at 10/s");
        assert!(background >= 45, "background got {background} of {all}");
    }
}
