//! The table `fulfilld bench` prints: each figure beside its goal, with the machine and
//! the settings that produced it.

use std::fmt;
use std::time::Duration;

use super::BenchArgs;
use super::load::Answer;

/// Percentiles of acknowledgement latency.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    /// The percentiles of `sorted`, which is sorted.
    pub fn of(sorted: &[Duration]) -> Self {
        let at = |quantile: f64| {
            let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
            sorted.get(index).copied().unwrap_or_default()
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

/// What an open loop of deliveries measured.
#[derive(Debug, Clone, Copy)]
pub struct Answers {
    /// From each delivery's appointed time to its answer.
    pub latency: Latency,
    /// The p99 of how late the load generator sent them, which `latency` includes: when
    /// it is near the p99 of `latency`, the generator is what was measured.
    pub sent_late_p99: Duration,
}

impl Answers {
    pub fn of(answers: &[Answer]) -> Self {
        let sorted = |of: fn(&Answer) -> Duration| {
            let mut durations: Vec<Duration> = answers.iter().map(of).collect();
            durations.sort_unstable();
            durations
        };
        Self {
            latency: Latency::of(&sorted(|answer| answer.latency)),
            sent_late_p99: Latency::of(&sorted(|answer| answer.sent_late)).p99,
        }
    }

    /// Its p99, p50, max and the generator's lag, as the table shows them.
    fn shown(&self) -> String {
        format!(
            "{} (p50 {}, max {}; sent late: p99 {})",
            millis(self.latency.p99),
            millis(self.latency.p50),
            millis(self.latency.max),
            millis(self.sent_late_p99),
        )
    }
}

/// What an `e2e` or `soak` run measured.
#[derive(Debug, Clone, Copy)]
pub struct Fulfillments {
    pub sessions: usize,
    pub per_second: f64,
    pub cpu_per_fulfillment: Duration,
    /// PostgreSQL's backends, when the server runs on this machine.
    pub database_cpu_per_fulfillment: Option<Duration>,
    pub syncs_per_fulfillment: Option<f64>,
    pub stripe_calls_per_session: f64,
    pub connections_per_call: f64,
    pub rss_bytes: u64,
    pub live_actors: Option<usize>,
}

/// What a `flash` run measured.
#[derive(Debug, Clone, Copy)]
pub struct Flash {
    pub rate: u32,
    pub seconds: f64,
    pub answers: Answers,
    /// Deliveries answered with anything but a 2xx (a 5xx, or a 408 from a server too
    /// busy to read the request in time).
    pub server_errors: usize,
    /// Deliveries whose connection failed before an answer.
    pub dropped: usize,
}

/// What a `replicas` run measured.
#[derive(Debug, Clone, Copy)]
pub struct Replicas {
    pub servers: usize,
    pub acks_per_second: f64,
    pub per_second: f64,
    pub cpu_per_fulfillment: Duration,
    pub stripe_calls_per_session: f64,
}

/// What a `chaos` run did and found.
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    pub servers: usize,
    pub sessions: usize,
    /// Replicas killed with SIGKILL and started again.
    pub kills: usize,
    /// Deliveries sent again because a replica did not answer.
    pub sent_again: usize,
    /// Receipts sent twice: the SMTP sync gap, at most one per kill.
    pub receipts_twice: usize,
    pub stripe_calls_per_session: f64,
    /// From the first delivery to the last receipt.
    pub took: Duration,
}

/// Every figure measured so far.
pub struct Report {
    cores: usize,
    backend: &'static str,
    settings: String,
    rate: u32,
    pub acks_per_second: Option<f64>,
    pub ack_latency: Option<Answers>,
    pub e2e: Option<Fulfillments>,
    pub soak: Option<Fulfillments>,
    pub storm_calls: Option<usize>,
    pub flash: Option<Flash>,
    pub replicas: Option<Replicas>,
    pub chaos: Option<Chaos>,
}

impl Report {
    pub fn new(args: &BenchArgs, backend: &'static str) -> Self {
        let settings = format!(
            "acks: {} events over {} connections; latency: {}/s for {:?}; e2e: {} sessions, \
             {} deliveries in flight; storm: {} requests{}",
            args.events,
            args.connections,
            args.rate,
            args.duration,
            args.sessions_for(super::Scenario::E2e),
            args.concurrency,
            args.storm,
            if args.quick { " (--quick)" } else { "" },
        );
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            backend,
            settings,
            rate: args.rate,
            acks_per_second: None,
            ack_latency: None,
            e2e: None,
            soak: None,
            storm_calls: None,
            flash: None,
            replicas: None,
            chaos: None,
        }
    }

    /// What is measured, where.
    pub fn heading(&self) -> String {
        let durability = match self.backend {
            "sqlite" => "SQLite, WAL, synchronous = NORMAL, the WAL synced before each answer",
            _ => "PostgreSQL",
        };
        format!(
            "fulfilld {} bench on {} cores, {durability}\n{}",
            env!("CARGO_PKG_VERSION"),
            self.cores,
            self.settings
        )
    }

    /// The goal of a figure on this run's backend: (SQLite's, PostgreSQL's).
    fn goal(&self, goals: (&'static str, &'static str)) -> &'static str {
        match self.backend {
            "sqlite" => goals.0,
            _ => goals.1,
        }
    }

    fn rows(&self) -> Vec<(String, String, &'static str)> {
        let mut rows = Vec::new();
        if let Some(e2e) = &self.e2e {
            rows.push((
                "server CPU per fulfillment (user+sys / fulfillments)".to_owned(),
                format!("{:.3} ms", e2e.cpu_per_fulfillment.as_secs_f64() * 1e3),
                self.goal(("≤ 0.35 ms", "≤ 0.6 ms")),
            ));
            if let Some(cpu) = e2e.database_cpu_per_fulfillment {
                rows.push((
                    "PostgreSQL backends' CPU per fulfillment (fulfilld's connections)".to_owned(),
                    format!("{:.3} ms", cpu.as_secs_f64() * 1e3),
                    "—",
                ));
            }
            rows.push((
                "end-to-end fulfillments/s (first delivery → last receipt accepted)".to_owned(),
                format!("{:.0}", e2e.per_second),
                self.goal(("≥ 1,500", "≥ 1,000")),
            ));
        }
        if let Some(acks) = self.acks_per_second {
            rows.push((
                "durable acks/s (distinct signed events, closed loop)".to_owned(),
                format!("{acks:.0}"),
                self.goal(("≥ 10,000", "≥ 5,000")),
            ));
        }
        if let Some(answers) = &self.ack_latency {
            rows.push((
                format!(
                    "ack p99 at an offered {}/s, fulfillments running",
                    self.rate
                ),
                answers.shown(),
                self.goal(("≤ 5 ms", "≤ 10 ms")),
            ));
        }
        if let Some(e2e) = &self.e2e {
            let (what, goal) = match self.backend {
                "sqlite" => ("database fsyncs per fulfillment (ack included)", "≤ 1"),
                _ => (
                    "PostgreSQL WAL syncs per fulfillment (pg_stat_wal)",
                    "≤ 0.5",
                ),
            };
            rows.push((
                what.to_owned(),
                e2e.syncs_per_fulfillment
                    .map_or_else(|| "not counted (no perf)".to_owned(), |s| format!("{s:.2}")),
                goal,
            ));
            rows.push((
                "new TCP connections per Stripe call".to_owned(),
                format!("{:.3}", e2e.connections_per_call),
                "≤ 0.01",
            ));
            rows.push((
                "Stripe calls per fulfilled session (2 items)".to_owned(),
                format!("{:.2}", e2e.stripe_calls_per_session),
                "1",
            ));
            rows.push((
                format!("RSS after {} sessions", e2e.sessions),
                mib(e2e.rss_bytes),
                "—",
            ));
        }
        if let Some(soak) = &self.soak {
            rows.push((
                format!("RSS after {} sessions (soak)", soak.sessions),
                format!(
                    "{}, {} live actors, {:.0}/s",
                    mib(soak.rss_bytes),
                    soak.live_actors.map_or("?".to_owned(), |n| n.to_string()),
                    soak.per_second
                ),
                "≤ 60 MB after 100,000",
            ));
        }
        if let Some(flash) = &self.flash {
            rows.push((
                format!(
                    "ack p99, {}/s offered for {:.0} s (flash sale, backlog growing)",
                    flash.rate, flash.seconds
                ),
                format!(
                    "{}, {} not answered 2xx, {} connections failed",
                    flash.answers.shown(),
                    flash.server_errors,
                    flash.dropped
                ),
                self.goal(("≤ 20 ms, all 2xx", "≤ 50 ms, all 2xx")),
            ));
        }
        if let Some(replicas) = &self.replicas {
            let servers = replicas.servers;
            rows.push((
                format!("{servers} replicas: durable acks/s (each event to two replicas)"),
                format!("{:.0}", replicas.acks_per_second),
                "—",
            ));
            rows.push((
                format!("{servers} replicas: end-to-end fulfillments/s"),
                format!(
                    "{:.0} ({:.3} ms CPU each, all replicas)",
                    replicas.per_second,
                    replicas.cpu_per_fulfillment.as_secs_f64() * 1e3
                ),
                "—",
            ));
            rows.push((
                format!("{servers} replicas: Stripe calls per fulfilled session"),
                format!("{:.2}", replicas.stripe_calls_per_session),
                "1.00",
            ));
        }
        if let Some(chaos) = &self.chaos {
            rows.push((
                format!(
                    "chaos: {} sessions, each event twice to {} replicas, {} killed -9 and \
                     started again ({} deliveries sent again), {:.1} s",
                    chaos.sessions,
                    chaos.servers,
                    chaos.kills,
                    chaos.sent_again,
                    chaos.took.as_secs_f64()
                ),
                "every session fulfilled once; shipments under one key each; stock exact"
                    .to_owned(),
                "all",
            ));
            rows.push((
                "chaos: receipts sent twice (the SMTP sync gap of the processes killed)".to_owned(),
                format!(
                    "{} ({:.1} a kill)",
                    chaos.receipts_twice,
                    chaos.receipts_twice as f64 / chaos.kills.max(1) as f64
                ),
                "≤ 1 a kill",
            ));
            rows.push((
                "chaos: Stripe calls per session".to_owned(),
                format!("{:.2}", chaos.stripe_calls_per_session),
                "—",
            ));
        }
        if let Some(calls) = self.storm_calls {
            rows.push((
                "Stripe calls for a storm of duplicates and landing pages".to_owned(),
                calls.to_string(),
                "≤ 2",
            ));
        }
        rows
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.heading())?;
        writeln!(f)?;
        writeln!(f, "| figure | fulfilld | goal |")?;
        writeln!(f, "|---|---|---|")?;
        for (figure, value, goal) in self.rows() {
            writeln!(f, "| {figure} | {value} | {goal} |")?;
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_from_the_sorted_latencies() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let latency = Latency::of(&sorted);
        assert_eq!(latency.p50, Duration::from_millis(51));
        assert_eq!(latency.p99, Duration::from_millis(99));
        assert_eq!(latency.max, Duration::from_millis(100));
    }
}
