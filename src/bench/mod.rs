//! `fulfilld bench`: the engine's own benchmark.
//!
//! Each scenario starts a world of its own (see [`rig`]): a fresh database, a Stripe
//! double on a port of its own, a mail server that counts receipts, and fulfilld itself
//! as a separate process, so the CPU it reports is the server's alone. The load is signed
//! webhooks over real HTTP. Every scenario ends by waiting for a receipt per session and
//! checking that each session was fulfilled once and each receipt sent once; a run that
//! fails those checks fails, however fast it was.

mod chaos;
mod load;
mod postgres;
mod report;
mod rig;
mod server;
mod smtp;
mod warehouse;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::configuration::parse_duration;
use crate::db::DatabaseUrl;
use load::progress;
use postgres::backend_cpu_spent;
pub use report::Report;
use rig::{Place, Rig};

/// What `fulfilld bench` measures, and how hard it pushes.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Scenarios to run: every one but `soak` when none is named.
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// A run of a few seconds that checks correctness, never speed (CI's smoke test).
    #[arg(long)]
    pub quick: bool,
    /// Sessions fulfilled by `e2e` (default 3,000) and `soak` (default 100,000).
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Distinct events delivered by `acks`.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Connections `acks` delivers over, each sending as soon as it is answered.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Deliveries per second offered by `latency`, whatever the answers.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// How long `latency` offers its rate.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Deliveries in flight at once in `e2e` and `soak`.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Concurrent requests for one session in `storm`: half webhook duplicates, half
    /// landing pages.
    #[arg(long, default_value_t = 250)]
    pub storm: usize,
    /// Deliveries per second offered by `flash`.
    #[arg(long, default_value_t = 3_000)]
    pub flash_rate: u32,
    /// How long `flash` offers its rate.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub flash_for: Duration,
    /// Servers in `replicas`.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// The fulfilld binary to measure (this one by default): two builds compared under
    /// the very same load.
    #[arg(long)]
    pub server: Option<std::path::PathBuf>,
}

/// A scenario of `fulfilld bench`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Durable acknowledgements per second, closed loop.
    Acks,
    /// Acknowledgement latency at an offered rate, fulfillments running.
    Latency,
    /// Fulfillments per second from first delivery to last receipt, and their cost.
    E2e,
    /// Memory and live actors after many sessions.
    Soak,
    /// Stripe calls for a storm of duplicates and landing pages for one session.
    Storm,
    /// A flash sale past fulfilment capacity: `--flash-rate` offered for `--flash-for`;
    /// the acknowledgements' latency while the backlog grows, and any 5xx.
    Flash,
    /// `--replicas` servers on one PostgreSQL, each event delivered to two of them:
    /// acks/s, e2e/s and Stripe calls per session.
    Replicas,
    /// `--replicas` servers on one PostgreSQL, each event delivered twice to random ones,
    /// while one at a time is killed with SIGKILL and started again at random moments;
    /// then every exactly-once check, a receipt sent twice allowed once per kill.
    Chaos,
}

/// Runs the scenarios `args` names against `database` and prints the table.
pub async fn run(args: BenchArgs, database: &DatabaseUrl) -> anyhow::Result<()> {
    let args = if args.quick { args.quick() } else { args };
    let scenarios = match args.scenarios.as_slice() {
        [] => {
            let mut all = vec![
                Scenario::Acks,
                Scenario::Latency,
                Scenario::Flash,
                Scenario::E2e,
                Scenario::Storm,
            ];
            if matches!(database, DatabaseUrl::Postgres(_)) {
                all.push(Scenario::Replicas);
                all.push(Scenario::Chaos);
            }
            all
        }
        named => named.to_vec(),
    };
    // Private to this user (0700), so its logs and databases cannot be planted or read.
    let dir = tempfile::Builder::new()
        .prefix("fulfilld-bench-")
        .tempdir()
        .context("cannot create the bench's directory")?;
    let binary = match &args.server {
        Some(binary) => binary.clone(),
        None => std::env::current_exe().context("cannot find the fulfilld binary")?,
    };
    let place = Place {
        binary,
        dir: dir.path().to_owned(),
        postgres: match database {
            DatabaseUrl::Sqlite(_) => None,
            DatabaseUrl::Postgres(url) => Some(url.clone()),
        },
        databases: Default::default(),
    };
    let mut report = Report::new(&args, database.backend());
    eprintln!("{}", report.heading());
    let measured = run_scenarios(&args, &scenarios, &place, &mut report).await;
    place.drop_databases().await;
    if let Err(error) = measured {
        let kept = dir.keep();
        return Err(error.context(format!("the servers' logs are in {}", kept.display())));
    }
    println!("{report}");
    Ok(())
}

async fn run_scenarios(
    args: &BenchArgs,
    scenarios: &[Scenario],
    place: &Place,
    report: &mut Report,
) -> anyhow::Result<()> {
    for &scenario in scenarios {
        eprintln!("{scenario:?}…");
        let measured = match scenario {
            Scenario::Acks => acks(args, place, report).await,
            Scenario::Latency => latency(args, place, report).await,
            Scenario::E2e => e2e(args, place, report, Scenario::E2e).await,
            Scenario::Soak => e2e(args, place, report, Scenario::Soak).await,
            Scenario::Storm => storm(args, place, report).await,
            Scenario::Flash => flash(args, place, report).await,
            Scenario::Replicas => replicas(args, place, report).await,
            Scenario::Chaos => chaos::chaos(args, place, report).await,
        };
        measured.with_context(|| format!("scenario {scenario:?} failed"))?;
    }
    Ok(())
}

impl BenchArgs {
    /// The same run, small enough for seconds.
    fn quick(self) -> Self {
        Self {
            sessions: Some(self.sessions.unwrap_or(200).min(200)),
            events: self.events.min(300),
            rate: self.rate.min(200),
            duration: self.duration.min(Duration::from_secs(1)),
            storm: self.storm.min(50),
            flash_rate: self.flash_rate.min(300),
            flash_for: self.flash_for.min(Duration::from_secs(1)),
            ..self
        }
    }

    fn sessions_for(&self, scenario: Scenario) -> usize {
        match (scenario, self.sessions) {
            (_, Some(sessions)) => sessions,
            (Scenario::Soak, None) => 100_000,
            _ => 3_000,
        }
    }
}

async fn acks(args: &BenchArgs, place: &Place, report: &mut Report) -> anyhow::Result<()> {
    let rig = Rig::start(place, "acks", args.events).await?;
    let bar = progress("acks", args.events);
    let started = Instant::now();
    rig.deliverer
        .closed_loop(&rig.sessions, args.connections, &bar)
        .await?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    rig.drain(place).await?;
    report.acks_per_second = Some(per_second(args.events, elapsed));
    Ok(())
}

async fn latency(args: &BenchArgs, place: &Place, report: &mut Report) -> anyhow::Result<()> {
    let count = (f64::from(args.rate) * args.duration.as_secs_f64()).ceil() as usize;
    let rig = Rig::start(place, "latency", count.max(1)).await?;
    let bar = progress("offered", rig.sessions.len());
    let answers = rig
        .deliverer
        .open_loop(&rig.sessions, args.rate, &bar)
        .await?;
    bar.finish_and_clear();
    rig.drain(place).await?;
    report.ack_latency = Some(report::Answers::of(&answers));
    Ok(())
}

async fn e2e(
    args: &BenchArgs,
    place: &Place,
    report: &mut Report,
    scenario: Scenario,
) -> anyhow::Result<()> {
    let count = args.sessions_for(scenario);
    let name = if scenario == Scenario::Soak {
        "soak"
    } else {
        "e2e"
    };
    let rig = Rig::start(place, name, count).await?;
    let before = rig.server.usage()?;
    let database_before = rig.database_cpu().await;
    let bar = progress("delivered", count);
    let started = Instant::now();
    rig.deliverer
        .closed_loop(&rig.sessions, args.concurrency, &bar)
        .await?;
    bar.finish_and_clear();
    let drained = rig.drain(place).await?;
    let elapsed = drained.last_receipt.saturating_duration_since(started);
    let run = report::Fulfillments {
        sessions: count,
        per_second: per_second(count, elapsed),
        cpu_per_fulfillment: drained.usage.cpu.saturating_sub(before.cpu) / to_u32(count),
        database_cpu_per_fulfillment: database_before
            .zip(drained.database_cpu.as_ref())
            .map(|(before, after)| backend_cpu_spent(&before, after) / to_u32(count)),
        syncs_per_fulfillment: drained.syncs.map(|syncs| syncs as f64 / count as f64),
        stripe_calls_per_session: drained.stripe_calls as f64 / count as f64,
        connections_per_call: drained.stripe_connections as f64
            / drained.stripe_calls.max(1) as f64,
        rss_bytes: drained.usage.rss_bytes,
        live_actors: drained.live_actors,
    };
    match scenario {
        Scenario::Soak => report.soak = Some(run),
        _ => report.e2e = Some(run),
    }
    Ok(())
}

async fn flash(args: &BenchArgs, place: &Place, report: &mut Report) -> anyhow::Result<()> {
    let count = (f64::from(args.flash_rate) * args.flash_for.as_secs_f64()).ceil() as usize;
    let rig = Rig::start(place, "flash", count.max(1)).await?;
    let bar = progress("offered", rig.sessions.len());
    let answers = rig
        .deliverer
        .open_loop_answers(&rig.sessions, args.flash_rate, &bar)
        .await?;
    bar.finish_and_clear();
    // Anything but a 2xx is not an acknowledgement, and Stripe would send it again.
    let refused = answers
        .iter()
        .filter(|answer| answer.status != 0 && !(200..300).contains(&answer.status))
        .count();
    let dropped = answers.iter().filter(|answer| answer.status == 0).count();
    if refused + dropped > 0 {
        // Stripe would retry them; the run's checks need every event stored.
        for (index, session) in rig.sessions.iter().enumerate() {
            let (body, signature) = rig
                .deliverer
                .completed(&format!("evt_bench_{index}"), session);
            rig.deliverer.deliver(body, signature).await?;
        }
    }
    rig.drain(place).await?;
    report.flash = Some(report::Flash {
        rate: args.flash_rate,
        seconds: args.flash_for.as_secs_f64(),
        answers: report::Answers::of(&answers),
        server_errors: refused,
        dropped,
    });
    Ok(())
}

async fn replicas(args: &BenchArgs, place: &Place, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        place.postgres.is_some(),
        "replicas share PostgreSQL: run it with --database-url postgres://…"
    );
    let count = args.sessions_for(Scenario::E2e);
    let rig = Rig::start_replicas(place, "replicas", count, args.replicas).await?;
    let before = rig.cpu()?;
    let bar = progress("delivered", count);
    let started = Instant::now();
    // Every event twice, to two replicas: Stripe retrying to another one.
    rig.deliverer
        .closed_loop_copies(&rig.sessions, args.connections, 2, &bar)
        .await?;
    let acked = started.elapsed();
    bar.finish_and_clear();
    let drained = rig.drain(place).await?;
    let elapsed = drained.last_receipt.saturating_duration_since(started);
    report.replicas = Some(report::Replicas {
        servers: args.replicas.max(1),
        acks_per_second: per_second(2 * count, acked),
        per_second: per_second(count, elapsed),
        cpu_per_fulfillment: drained.usage.cpu.saturating_sub(before) / to_u32(count),
        stripe_calls_per_session: drained.stripe_calls as f64 / count as f64,
    });
    Ok(())
}

/// Sessions stormed, one after another: one storm could be lucky.
const STORMS: usize = 5;

async fn storm(args: &BenchArgs, place: &Place, report: &mut Report) -> anyhow::Result<()> {
    let storms = if args.quick { 1 } else { STORMS };
    let rig = Rig::start(place, "storm", storms).await?;
    let mut most = 0;
    for (index, session) in rig.sessions.iter().enumerate() {
        let mut requests = tokio::task::JoinSet::new();
        for request in 0..args.storm {
            let deliverer = rig.deliverer.clone();
            let landing = format!("{}/after-checkout?session_id={session}", rig.server.address);
            let (body, signature) = deliverer.completed(&format!("evt_storm_{index}"), session);
            requests.spawn(async move {
                if request % 2 == 0 {
                    deliverer.deliver(body, signature).await
                } else {
                    match deliverer.get(&landing).await? {
                        200 => Ok(()),
                        status => anyhow::bail!("a landing page was answered {status}"),
                    }
                }
            });
        }
        while let Some(request) = requests.join_next().await {
            request.context("a request panicked")??;
        }
        most = most.max(rig.double.calls(session));
    }
    rig.drain(place).await?;
    report.storm_calls = Some(most);
    Ok(())
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn to_u32(count: usize) -> u32 {
    u32::try_from(count.max(1)).unwrap_or(u32::MAX)
}
