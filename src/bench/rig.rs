//! One scenario's world: a fresh database, a Stripe double that knows the scenario's
//! sessions, a mail server, and fulfilld serving them; and the exactly-once checks once
//! the load is over.

mod checks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use super::load::{Deliverer, progress, wait_until};
use super::postgres::{backend_cpu, drop_postgres, fresh_postgres, wal_syncs};
use super::server::{Server, Usage, can_count_syncs, live_actors};
use super::smtp::MailSink;
use super::warehouse::WarehouseSink;
use crate::catalog::Catalog;
use crate::db::{Database, DatabaseUrl};
use crate::sandbox::{SessionSpec, StripeDouble};

const SECRET_KEY: &str = "sk_test_bench";
const WEBHOOK_SECRET: &str = "whsec_bench_0123456789abcdef";
const MAIL_DOMAIN: &str = "bench.example";
/// Two digital products: every fulfillment grants access to both and sends a receipt. The
/// mug is for `chaos` alone, which ships it too.
const CATALOG: &str = r#"
[[product]]
price = "price_bench_mug"
sku = "BENCH-MUG"
kind = "physical"
stock = 1000000
name = "Mug"
unit_amount = 1200
currency = "usd"

[[product]]
price = "price_bench_guide"
sku = "GUIDE"
kind = "digital"
name = "Guide"
unit_amount = 900
currency = "usd"
access_url = "https://downloads.example.com/{sku}?order={session_id}"

[[product]]
price = "price_bench_course"
sku = "COURSE"
kind = "digital"
name = "Course"
unit_amount = 4900
currency = "usd"
access_url = "https://learn.example.com/{sku}?order={session_id}"
"#;
/// How long the engine may go without sending a receipt before the run is failed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where a run keeps its files and its databases.
pub struct Place {
    /// The fulfilld to start.
    pub binary: PathBuf,
    /// Logs, the catalog and SQLite databases.
    pub dir: PathBuf,
    /// The PostgreSQL server to create databases on; SQLite when `None`.
    pub postgres: Option<String>,
    /// The URLs of the PostgreSQL databases created and not dropped yet.
    pub databases: std::sync::Mutex<Vec<String>>,
}

impl Place {
    /// Drops every PostgreSQL database the run created, whether or not it succeeded.
    pub async fn drop_databases(&self) {
        let Some(server) = &self.postgres else {
            return;
        };
        let created =
            std::mem::take(&mut *self.databases.lock().unwrap_or_else(|p| p.into_inner()));
        for database in created {
            if let Err(error) = drop_postgres(server, &database).await {
                eprintln!("fulfilld bench: could not drop {database}: {error:#}");
            }
        }
    }
}

/// A scenario's world, serving.
pub struct Rig {
    pub server: Server,
    /// More servers on the same database (`bench replicas`).
    pub replicas: Vec<Server>,
    pub double: StripeDouble,
    pub sink: MailSink,
    pub deliverer: Deliverer,
    pub sessions: Vec<String>,
    database: String,
    postgres_syncs_before: Option<i64>,
    /// The scenario's name, which names its database and log.
    name: String,
    /// The servers' environment, to start one again with.
    env: Vec<(&'static str, String)>,
    /// Where shipments go, when the sessions buy the mug.
    warehouse: Option<WarehouseSink>,
}

/// What a scenario cost the server, from the moment it was ready until it drained.
pub struct Drained {
    /// When the last receipt was accepted.
    pub last_receipt: Instant,
    /// Resource use once drained, before stopping.
    pub usage: Usage,
    /// `fsync`s (SQLite, counted by perf) or WAL syncs (PostgreSQL), if counted.
    pub syncs: Option<u64>,
    pub stripe_calls: usize,
    pub stripe_connections: usize,
    pub live_actors: Option<usize>,
    /// On PostgreSQL, the CPU time of each backend serving the database (see
    /// [`Rig::database_cpu`]).
    pub database_cpu: Option<HashMap<i32, Duration>>,
}

impl Rig {
    /// Starts a world for `sessions` paid sessions of two items each.
    pub async fn start(place: &Place, name: &str, sessions: usize) -> anyhow::Result<Self> {
        Self::start_replicas(place, name, sessions, 1).await
    }

    /// Like [`Rig::start`], with `servers` replicas on the one database, the deliveries
    /// spread over them.
    pub async fn start_replicas(
        place: &Place,
        name: &str,
        sessions: usize,
        servers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_world(place, name, sessions, servers, false).await
    }

    /// Like [`Rig::start_replicas`], each session buying a mug as well, which the
    /// rig's warehouse is asked to ship.
    pub async fn start_shipping(
        place: &Place,
        name: &str,
        sessions: usize,
        servers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_world(place, name, sessions, servers, true).await
    }

    async fn start_world(
        place: &Place,
        name: &str,
        sessions: usize,
        servers: usize,
        shipping: bool,
    ) -> anyhow::Result<Self> {
        let catalog = Catalog::parse(CATALOG).map_err(anyhow::Error::msg)?;
        let double = StripeDouble::with_catalog(Arc::new(catalog))?;
        let building = progress("sessions", sessions);
        let spec = || match shipping {
            false => SessionSpec::paid(&[("Guide", 900, 1), ("Course", 4900, 2)])
                .with_prices(&["price_bench_guide", "price_bench_course"]),
            true => SessionSpec::paid(&[("Guide", 900, 1), ("Course", 4900, 2), ("Mug", 1200, 1)])
                .with_prices(&["price_bench_guide", "price_bench_course", "price_bench_mug"])
                .with_shipping("Ada Lovelace", "1 Analytical Way", "London", "N1 1AA", "GB"),
        };
        let ids = (0..sessions)
            .map(|_| {
                building.inc(1);
                double.add_session(spec())
            })
            .collect();
        let warehouse = shipping.then(WarehouseSink::start).transpose()?;
        building.finish_and_clear();
        let sink = MailSink::start()?;
        let dir = &place.dir;
        let catalog_path = dir.join("catalog.toml");
        std::fs::write(&catalog_path, CATALOG)?;
        let (database, count_fsyncs, postgres_syncs_before) = match &place.postgres {
            None => {
                let path = dir.join(format!("{name}.db"));
                (
                    format!("sqlite://{}", path.display()),
                    can_count_syncs(),
                    None,
                )
            }
            Some(server) => {
                let database = fresh_postgres(server, name).await?;
                place
                    .databases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(database.clone());
                (database, false, Some(wal_syncs(server).await?))
            }
        };
        let mut env = vec![
            ("DATABASE_URL", database.clone()),
            ("STRIPE_SECRET_KEY", SECRET_KEY.to_owned()),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("STRIPE_API_BASE", double.url().to_owned()),
            ("STRIPE_MAX_RPS", "10000".to_owned()),
            ("CLIENT_LOOKUPS_PER_MIN", "1000000".to_owned()),
            ("SMTP_URL", sink.url()),
            ("SEND_RECEIPTS", "true".to_owned()),
            ("MAIL_FROM", format!("Bench Shop <shop@{MAIL_DOMAIN}>")),
            ("CATALOG", catalog_path.display().to_string()),
            ("RECONCILE_EVERY", "0".to_owned()),
            // The shutdown line tells how many session actors were live.
            ("RUST_LOG", "warn,fulfilld::startup=info".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ];
        if let Some(warehouse) = &warehouse {
            env.push(("SHIPPING_WEBHOOK_URL", warehouse.url().to_owned()));
        }
        let server = Server::start(
            &place.binary,
            &env,
            &dir.join(format!("{name}.log")),
            count_fsyncs,
        )
        .await?;
        let mut replicas = Vec::new();
        for replica in 1..servers.max(1) {
            let log = dir.join(format!("{name}-{replica}.log"));
            replicas.push(Server::start(&place.binary, &env, &log, false).await?);
        }
        let addresses: Vec<&str> = std::iter::once(&server)
            .chain(&replicas)
            .map(|server| server.address.as_str())
            .collect();
        let deliverer = Deliverer::spread(&addresses, WEBHOOK_SECRET, (*double).clone())?;
        Ok(Self {
            server,
            replicas,
            double,
            sink,
            deliverer,
            sessions: ids,
            database,
            postgres_syncs_before,
            name: name.to_owned(),
            env,
            warehouse,
        })
    }

    /// Kills server `index` (0 is the first, then the replicas) with SIGKILL and starts it
    /// again on its port, with a log of its own.
    pub async fn kill_and_restart(
        &mut self,
        place: &Place,
        index: usize,
        kill: usize,
    ) -> anyhow::Result<()> {
        let server = match index {
            0 => &mut self.server,
            n => self.replicas.get_mut(n - 1).context("no such replica")?,
        };
        server.kill_9().await?;
        let log = place
            .dir
            .join(format!("{}-{index}-after-kill-{kill}.log", self.name));
        *server = Server::start_on(&place.binary, &self.env, &log, false, server.port()).await?;
        Ok(())
    }

    /// The CPU time all of the rig's servers have used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let mut cpu = self.server.usage()?.cpu;
        for replica in &self.replicas {
            cpu += replica.usage()?.cpu;
        }
        Ok(cpu)
    }

    /// Waits for a receipt per session, stops the server, and checks that each session
    /// was fulfilled once and each receipt sent once.
    pub async fn drain(self, place: &Place) -> anyhow::Result<Drained> {
        self.drain_allowing(place, 0)
            .await
            .map(|(drained, _)| drained)
    }

    /// Like [`Rig::drain`], allowing up to `duplicates` receipts sent twice (the SMTP sync
    /// gap of the processes killed); returns how many were.
    pub async fn drain_allowing(
        mut self,
        place: &Place,
        duplicates: usize,
    ) -> anyhow::Result<(Drained, usize)> {
        let expected = self.sessions.len();
        let receipts = progress("receipts", expected);
        // Every session's receipt, not as many messages: a duplicate is no receipt.
        wait_until(expected, PATIENCE, &receipts, || self.sink.distinct())
            .await
            .context("waiting for receipts")?;
        receipts.finish_and_clear();
        // The other effects too (a shipment, a stock movement), before anything stops.
        let url = DatabaseUrl::parse(&self.database).map_err(anyhow::Error::msg)?;
        let db = Database::connect(&url).await?;
        let settled = Instant::now();
        while db.figures().await?.pending_effects > 0 {
            ensure!(
                settled.elapsed() < PATIENCE,
                "effects still pending after a minute"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let last_receipt = self.sink.last_at().context("no receipt arrived")?;
        let database_cpu = self.database_cpu().await;
        let mut usage = self.server.usage()?;
        for replica in &self.replicas {
            usage.cpu += replica.usage()?.cpu;
        }
        let stripe_calls = self.double.total_calls();
        let stripe_connections = self.double.connections();
        for replica in &mut self.replicas {
            replica.stop().await?;
        }
        let syncs = self.server.stop().await?;
        let live_actors = live_actors(&place.dir.join(format!("{}.log", self.name)));
        let syncs = match (&place.postgres, self.postgres_syncs_before) {
            (Some(server), Some(before)) => {
                Some(u64::try_from(wal_syncs(server).await? - before).unwrap_or(0))
            }
            _ => syncs,
        };
        let twice = self.check_exactly_once(duplicates, &db).await?;
        let drained = Drained {
            last_receipt,
            usage,
            syncs,
            stripe_calls,
            stripe_connections,
            live_actors,
            database_cpu,
        };
        Ok((drained, twice))
    }

    /// On PostgreSQL on this machine, the CPU time of each backend connected to the
    /// scenario's database so far, by process id.
    pub async fn database_cpu(&self) -> Option<HashMap<i32, Duration>> {
        self.postgres_syncs_before?;
        let servers: Vec<u32> = std::iter::once(&self.server)
            .chain(&self.replicas)
            .map(Server::pid)
            .collect();
        backend_cpu(&self.database, &servers).await.ok().flatten()
    }
}
