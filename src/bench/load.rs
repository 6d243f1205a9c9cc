//! The load: signed `checkout.session.completed` deliveries over real HTTP, in a closed
//! loop (a fixed number of connections, each sending as soon as it is answered) or an open
//! loop (a fixed rate, whatever the answers), and a storm of duplicates.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::sandbox::Simulator;
use crate::stripe::signature::signature_header;

/// Deliveries the open loop has in flight at once. Its client keeps every idle connection
/// (the server closes them after 5 s idle), so with this bound it opens about this many
/// and closes none of its own. Each one it closed would hold its ephemeral port for a
/// minute (`TIME_WAIT`); a flash sale whose answers slowed soon had all 28,000 taken, and
/// then every new connection cost a search of the whole port range in the kernel, which
/// took the load generator's cores while fulfilld sat idle. A delivery that waits here
/// still counts from its appointed time.
const IN_FLIGHT: usize = 1024;
/// How often [`Deliverer::at_random`] sends a delivery again before it gives up: a
/// minute of a fleet that does not answer.
const RETRIES: usize = 600;

/// Delivers webhooks for a run's sessions, signed as Stripe signs them.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    /// The servers' webhook URLs: a delivery goes to one of them.
    webhook_urls: Arc<[String]>,
    secret: String,
    simulator: Simulator,
}

impl Deliverer {
    /// A deliverer that spreads its deliveries over `servers`.
    pub fn spread(servers: &[&str], secret: &str, simulator: Simulator) -> anyhow::Result<Self> {
        Ok(Self {
            client: client()?,
            webhook_urls: servers
                .iter()
                .map(|server| format!("{server}/webhook"))
                .collect(),
            secret: secret.to_owned(),
            simulator,
        })
    }

    /// The event `event_id` about `session`: its body, and its signature as of now.
    pub fn completed(&self, event_id: &str, session: &str) -> (String, String) {
        let body = self
            .simulator
            .event_payload(event_id, "checkout.session.completed", session);
        let signature = signature_header(&self.secret, crate::db::now_ms() / 1000, body.as_bytes());
        (body, signature)
    }

    /// Posts one delivery to the first server; an answer other than 2xx is an error.
    pub async fn deliver(&self, body: String, signature: String) -> anyhow::Result<()> {
        self.deliver_to(0, body, signature).await
    }

    /// Posts one delivery to server `server` (modulo their number); an answer other than
    /// 2xx is an error.
    pub async fn deliver_to(
        &self,
        server: usize,
        body: String,
        signature: String,
    ) -> anyhow::Result<()> {
        match self.post(server, body, signature).await? {
            status if (200..300).contains(&status) => Ok(()),
            status => bail!("a webhook delivery was answered {status}"),
        }
    }

    /// Posts one delivery to server `server` and returns the answer's status.
    pub async fn post(
        &self,
        server: usize,
        body: String,
        signature: String,
    ) -> anyhow::Result<u16> {
        let url = &self.webhook_urls[server % self.webhook_urls.len()];
        let response = self
            .client
            .post(url)
            .header("Stripe-Signature", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .context("a webhook delivery failed")?;
        let status = response.status().as_u16();
        // Read to its end, so that the connection goes back to the pool, never closed.
        response
            .bytes()
            .await
            .context("a webhook answer was cut off")?;
        Ok(status)
    }

    /// A GET of `url`, answered whatever its status.
    pub async fn get(&self, url: &str) -> anyhow::Result<u16> {
        let response = self.client.get(url).send().await.context("a GET failed")?;
        Ok(response.status().as_u16())
    }

    /// Delivers one event per session over `connections` connections, each sending its
    /// next as soon as the last is answered. Returns when the last one is answered.
    pub async fn closed_loop(
        &self,
        sessions: &[String],
        connections: usize,
        progress: &ProgressBar,
    ) -> anyhow::Result<()> {
        self.closed_loop_copies(sessions, connections, 1, progress)
            .await
    }

    /// Like [`Self::closed_loop`], each event delivered `copies` times, each copy to the
    /// next server: what Stripe's retries to a fleet behind a load balancer look like.
    pub async fn closed_loop_copies(
        &self,
        sessions: &[String],
        connections: usize,
        copies: usize,
        progress: &ProgressBar,
    ) -> anyhow::Result<()> {
        let copies = copies.max(1);
        let sessions: Arc<[String]> = sessions.into();
        let next = Arc::new(AtomicUsize::new(0));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let (this, sessions, next) = (self.clone(), Arc::clone(&sessions), Arc::clone(&next));
            let progress = progress.clone();
            senders.spawn(async move {
                loop {
                    let delivery = next.fetch_add(1, Ordering::Relaxed);
                    let (index, copy) = (delivery / copies, delivery % copies);
                    let Some(session) = sessions.get(index) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let (body, signature) = this.completed(&format!("evt_bench_{index}"), session);
                    this.deliver_to(index + copy, body, signature).await?;
                    if copy + 1 == copies {
                        progress.inc(1);
                    }
                }
            });
        }
        while let Some(sender) = senders.join_next().await {
            sender.context("a sender panicked")??;
        }
        Ok(())
    }

    /// Delivers each session's event `copies` times over `connections`, each copy to a
    /// server picked at random and, when it does not answer 2xx (it was just killed, say),
    /// again to another after a moment, as Stripe retries; returns how many deliveries
    /// were sent again.
    pub async fn at_random(
        &self,
        sessions: &[String],
        connections: usize,
        copies: usize,
        progress: &ProgressBar,
    ) -> anyhow::Result<usize> {
        let copies = copies.max(1);
        let sessions: Arc<[String]> = sessions.into();
        let (next, again) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let (this, sessions) = (self.clone(), Arc::clone(&sessions));
            let (next, again, progress) = (Arc::clone(&next), Arc::clone(&again), progress.clone());
            senders.spawn(async move {
                loop {
                    let delivery = next.fetch_add(1, Ordering::Relaxed);
                    let (index, copy) = (delivery / copies, delivery % copies);
                    let Some(session) = sessions.get(index) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let event_id = format!("evt_chaos_{index}");
                    let mut tries = 0;
                    loop {
                        let (body, signature) = this.completed(&event_id, session);
                        let server = fastrand::usize(..this.webhook_urls.len());
                        match this.post(server, body, signature).await {
                            Ok(status) if (200..300).contains(&status) => break,
                            _ if tries < RETRIES => {
                                tries += 1;
                                again.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok(status) => bail!("{event_id} was answered {status} {RETRIES} times"),
                            Err(error) => {
                                return Err(error.context(format!("{event_id} never delivered")));
                            }
                        }
                    }
                    if copy + 1 == copies {
                        progress.inc(1);
                    }
                }
            });
        }
        while let Some(sender) = senders.join_next().await {
            sender.context("a sender panicked")??;
        }
        Ok(again.load(Ordering::Relaxed))
    }

    /// Delivers one event per session at `rate` per second, each at its appointed time
    /// whether or not earlier ones were answered; fails unless every one is answered 2xx.
    pub async fn open_loop(
        &self,
        sessions: &[String],
        rate: u32,
        progress: &ProgressBar,
    ) -> anyhow::Result<Vec<Answer>> {
        let answers = self.open_loop_answers(sessions, rate, progress).await?;
        for answer in &answers {
            match answer.status {
                200..300 => {}
                0 => bail!("a webhook delivery's connection failed"),
                status => bail!("a webhook delivery was answered {status}"),
            }
        }
        Ok(answers)
    }

    /// Like [`Self::open_loop`], whatever the answers, in the order they were offered.
    ///
    /// The deliveries run on a runtime of their own with a thread a core, and a client of
    /// their own. On the command's one thread, a load generator that fell behind for a
    /// moment (its core taken by the server and PostgreSQL) stayed behind: every late
    /// delivery waited its turn behind the others on that thread at each step of its
    /// request and its answer, and opened a connection of its own, so a lag of 50 ms came
    /// out as 300–700 ms answers from a server whose own handler took under 10 ms.
    pub async fn open_loop_answers(
        &self,
        sessions: &[String],
        rate: u32,
        progress: &ProgressBar,
    ) -> anyhow::Result<Vec<Answer>> {
        let this = Self {
            client: client()?,
            ..self.clone()
        };
        let (sessions, progress) = (sessions.to_vec(), progress.clone());
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("bench-load")
            .enable_all()
            .build()
            .context("cannot start the load generator's runtime")?;
        tokio::task::spawn_blocking(move || runtime.block_on(this.offer(sessions, rate, progress)))
            .await
            .context("the load generator panicked")?
    }

    async fn offer(
        self,
        sessions: Vec<String>,
        rate: u32,
        progress: ProgressBar,
    ) -> anyhow::Result<Vec<Answer>> {
        let interval = Duration::from_secs(1) / rate.max(1);
        let start = tokio::time::Instant::now();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut deliveries = tokio::task::JoinSet::new();
        for (index, session) in sessions.iter().enumerate() {
            let due = start + interval * u32::try_from(index).unwrap_or(u32::MAX);
            tokio::time::sleep_until(due).await;
            let (body, signature) = self.completed(&format!("evt_bench_{index}"), session);
            let (this, progress) = (self.clone(), progress.clone());
            let in_flight = Arc::clone(&in_flight);
            deliveries.spawn(async move {
                let _in_flight = in_flight.acquire().await;
                let sent_late = due.elapsed();
                // A connection that fails counts as an answer of its own (status 0).
                let status = this.post(index, body, signature).await.unwrap_or(0);
                progress.inc(1);
                let answer = Answer {
                    status,
                    latency: due.elapsed(),
                    sent_late,
                };
                Ok::<_, anyhow::Error>((index, answer))
            });
        }
        let mut answers = Vec::with_capacity(sessions.len());
        while let Some(delivery) = deliveries.join_next().await {
            answers.push(delivery.context("a delivery panicked")??);
        }
        answers.sort_unstable_by_key(|(index, _)| *index);
        Ok(answers.into_iter().map(|(_, answer)| answer).collect())
    }
}

/// One delivery of an open loop.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// Its status; 0 when its connection failed.
    pub status: u16,
    /// From its appointed time to its answer.
    pub latency: Duration,
    /// From its appointed time to when the load generator sent it: the generator's own
    /// lag, which `latency` includes.
    pub sent_late: Duration,
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")
}

/// A progress bar for `len` steps of `what`; hidden when stderr is not a terminal.
pub fn progress(what: &str, len: usize) -> ProgressBar {
    let bar = ProgressBar::new(u64::try_from(len).unwrap_or(u64::MAX));
    let style =
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {per_sec} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// Waits until `done()` reaches `target`, showing it on `progress`; fails after `patience`
/// without progress.
pub async fn wait_until(
    target: usize,
    patience: Duration,
    progress: &ProgressBar,
    mut done: impl FnMut() -> usize,
) -> anyhow::Result<()> {
    let mut last = (0, Instant::now());
    loop {
        let now = done();
        progress.set_position(u64::try_from(now).unwrap_or(u64::MAX));
        if now >= target {
            return Ok(());
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > patience {
            bail!("stuck at {now} of {target} for {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
