//! Paces calls to Stripe's API under a configured rate, customers first.
//!
//! A token bucket refills at `rate` per second and holds at most a quarter second's worth,
//! so a burst never exceeds Stripe's per-second limit. Each free token goes to the oldest
//! interactive waiter (a customer on the landing page) before any background waiter (the
//! webhook backlog, replays, reconcile).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Who is waiting for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A person is waiting on the answer.
    Interactive,
    /// Nobody is watching: webhooks, replays, reconcile.
    Background,
}

type Waiter = oneshot::Sender<()>;

/// A handle to the pacing task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Pacer {
    interactive: mpsc::UnboundedSender<Waiter>,
    background: mpsc::UnboundedSender<Waiter>,
}

impl Pacer {
    /// Starts a pacer allowing `rate` calls per second on the current runtime.
    pub fn start(rate: u32) -> Self {
        let (interactive, interactive_rx) = mpsc::unbounded_channel();
        let (background, background_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rate.max(1), interactive_rx, background_rx));
        Self {
            interactive,
            background,
        }
    }

    /// Waits until a call may be made.
    pub async fn acquire(&self, priority: Priority) {
        let (tx, rx) = oneshot::channel();
        let queue = match priority {
            Priority::Interactive => &self.interactive,
            Priority::Background => &self.background,
        };
        // If the pacing task is gone the runtime is shutting down; do not hold calls back.
        if queue.send(tx).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    rate: u32,
    mut interactive: mpsc::UnboundedReceiver<Waiter>,
    mut background: mpsc::UnboundedReceiver<Waiter>,
) {
    let interval = Duration::from_secs(1) / rate;
    let capacity = f64::from((rate / 4).max(1));
    let mut tokens = capacity;
    let mut refilled = Instant::now();
    loop {
        let now = Instant::now();
        tokens =
            (tokens + now.duration_since(refilled).as_secs_f64() * f64::from(rate)).min(capacity);
        refilled = now;
        if tokens < 1.0 {
            tokio::time::sleep(interval.mul_f64(1.0 - tokens)).await;
            continue;
        }
        let waiter = tokio::select! {
            biased;
            Some(waiter) = interactive.recv() => waiter,
            Some(waiter) = background.recv() => waiter,
            else => return,
        };
        // A waiter that gave up does not use its token.
        if waiter.send(()).is_ok() {
            tokens -= 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_burst_are_spread_at_the_rate() {
        let pacer = Pacer::start(20);
        let start = Instant::now();
        for _ in 0..25 {
            pacer.acquire(Priority::Background).await;
        }
        // 5 from the burst, then 20 more at 20/s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_waiters_go_before_the_backlog() {
        let pacer = Pacer::start(10);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for i in 0..20 {
            let (pacer, done) = (pacer.clone(), done_tx.clone());
            tokio::spawn(async move {
                pacer.acquire(Priority::Background).await;
                let _ = done.send(format!("background {i}"));
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (pacer2, done) = (pacer.clone(), done_tx.clone());
        tokio::spawn(async move {
            pacer2.acquire(Priority::Interactive).await;
            let _ = done.send("interactive".to_owned());
        });
        let mut order = Vec::new();
        while order.len() < 21 {
            order.push(done_rx.recv().await.unwrap_or_default());
        }
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
}
