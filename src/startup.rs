//! Wires the engine together: database, Stripe gateway, actors, inbox, effects and HTTP
//! server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::access::AccessSigner;
use crate::actors::Sessions;
use crate::configuration::{Config, Secret};
use crate::db::Database;
use crate::effects::{EffectActors, EffectDispatcher, Effects, Outbox};
use crate::fulfillment::Engine;
use crate::inbox::{Inbox, Workers};
use crate::reconcile;
use crate::replicas::{Replica, Role};
use crate::sandbox::Simulator;
use crate::stripe::{Pacer, StripeGateway};
use crate::telemetry::RequestSpan;
use crate::web::{
    Admin, AppState, ClientLimits, FiguresCache, SWEEP_EVERY, UnknownSessions, listen, metrics,
    routes,
};
use crate::{reservations, retention};

/// How often events left unprocessed by an outage are tried again.
const REPLAY_EVERY: Duration = Duration::from_secs(30);
/// How long a customer's page waits for the outcome before showing "still confirming".
const LANDING_WAIT: Duration = Duration::from_secs(8);

/// The engine without its HTTP server: what the CLI's commands use. Effects it enqueues
/// are carried out by a serving process.
pub struct Core {
    pub db: Database,
    pub sessions: Sessions,
    pub outbox: Outbox,
    pub stripe: StripeGateway,
    /// The key the gateway uses.
    pub secret_key: Secret,
    /// Signs the `{token}` of download links.
    pub access: AccessSigner,
}

impl Core {
    /// Connects to the database (applying migrations) and starts the actors. Must run
    /// inside an actix system.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let db = Database::connect(&config.database_url).await?;
        db.seed_inventory(&config.catalog).await?;
        let access = match &config.effects.access_signing_secret {
            Some(secret) => AccessSigner::new(secret.expose().as_bytes()),
            None => AccessSigner::new(db.shared_secret("access").await?.as_bytes()),
        };
        let outbox = Outbox::default();
        let pacer = Pacer::start(config.stripe.max_rps, config.stripe.interactive_share);
        // In sandbox mode every process on the database uses the key made first.
        let secret_key = match config.stripe.sandbox {
            Some(_) => Secret::new(db.sandbox_key(config.stripe.secret_key.expose()).await?),
            None => config.stripe.secret_key.clone(),
        };
        let stripe = StripeGateway::new(&secret_key, &config.stripe.api_base, pacer)?;
        let engine = Arc::new(Engine {
            db: db.clone(),
            stripe: stripe.clone(),
            catalog: Arc::clone(&config.catalog),
            outbox: outbox.clone(),
            tell: crate::domain::Tell {
                customer: config.effects.send_receipts,
                access: config.effects.access_webhook_url.is_some(),
                warehouse: config.effects.shipping_webhook_url.is_some(),
            },
        });
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let sessions = Sessions::start(engine, config.session_idle, cores);
        Ok(Self {
            db,
            sessions,
            outbox,
            stripe,
            secret_key,
            access,
        })
    }
}

/// A running fulfilld: the HTTP server plus the engine behind it.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on `METRICS_BIND`, when it has an address of its own.
    metrics_server: Option<(u16, Server)>,
    replica: Replica,
    core: Core,
    effects: Effects,
    shutdown_grace: Duration,
}

impl Application {
    /// Builds everything and binds the listener; the server runs once awaited.
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        let listener =
            listen(config.bind).with_context(|| format!("could not listen on {}", config.bind))?;
        let port = listener.local_addr()?.port();
        let simulator = config
            .stripe
            .sandbox
            .map(|payment_delay| sandbox(&mut config, port, payment_delay));
        let core = Core::start(&config).await?;
        // Before any work: the first calls are paced at this replica's share.
        let replica = Replica::join(
            &core.db,
            &config.database_url,
            core.stripe.pacer().clone(),
            config.stripe.max_rps,
            Role::Replica,
        )
        .await?;
        if let Some(simulator) = &simulator {
            simulator.accept_only(core.secret_key.expose());
            simulator.spawn_expiry(Duration::from_secs(15));
        }
        let clients = Arc::new(ClientLimits::new(
            config.client_lookups_per_min,
            config.trusted_proxies.clone(),
            config.proxy_header,
        ));
        spawn_sweeper(Arc::downgrade(&clients));
        let inbox = Inbox::start(core.db.clone());
        let state = web::Data::new(AppState {
            sessions: core.sessions.clone(),
            db: core.db.clone(),
            inbox: inbox.clone(),
            workers: Workers::start(
                core.sessions.clone(),
                core.db.clone(),
                inbox.clone(),
                replica.name(),
                config.webhook_workers,
                REPLAY_EVERY,
            ),
            webhook_secrets: config.stripe.webhook_secrets.clone(),
            landing_wait: LANDING_WAIT,
            catalog: Arc::clone(&config.catalog),
            stripe: core.stripe.clone(),
            public_url: config.public_url.clone(),
            shop: config
                .effects
                .mail_from
                .name
                .clone()
                .unwrap_or_else(|| "Shop".to_owned()),
            sandbox: simulator.is_some(),
            livemode: config.stripe.livemode,
            unknown: UnknownSessions::default(),
            clients,
            admin: config
                .admin_token
                .clone()
                .map(|token| Admin::new(token, &config.public_url)),
            outbox: core.outbox.clone(),
            access: core.access.clone(),
            figures: FiguresCache::start(core.db.clone()),
            standing: replica.standings(),
            checkout: config.checkout.clone(),
            locale: config.locale,
        });
        let shutdown_grace = config.shutdown_grace;
        let metrics_server = match config.metrics_bind {
            Some(address) => Some(metrics_server(address, state.clone(), shutdown_grace)?),
            None => None,
        };
        let metrics_here = metrics_server.is_none();
        let server = HttpServer::new(move || {
            let simulator = simulator.clone();
            App::new()
                .wrap(TracingLogger::<RequestSpan>::new())
                .app_data(state.clone())
                .configure(routes)
                .configure(|config| {
                    if metrics_here {
                        config.route("/metrics", web::get().to(metrics));
                    }
                })
                .configure(|config| {
                    if let Some(simulator) = simulator {
                        config.service(
                            web::scope("/sandbox").configure(|config| simulator.configure(config)),
                        );
                    }
                })
        })
        // Signals are handled by `run_until_stopped`, which also drains the effects.
        .disable_signals()
        .shutdown_timeout(shutdown_grace.as_secs())
        // A client has this long to send its request's head, and an idle kept-alive
        // connection is closed after the other (the README's connection limits).
        .client_request_timeout(crate::web::REQUEST_HEAD_WITHIN)
        .keep_alive(crate::web::IDLE_KEPT_ALIVE)
        .max_connections(crate::web::MAX_CONNECTIONS)
        .listen(listener)?
        .run();
        let actors = EffectActors::start(&core.db, &config, &core.access)?;
        let effects = EffectDispatcher::new(
            core.db.clone(),
            actors,
            core.outbox.clone(),
            inbox,
            &config.effects,
        )
        .spawn();
        if let Some(every) = config.reconcile_every {
            reconcile::spawn_schedule(
                core.sessions.clone(),
                core.db.clone(),
                core.stripe.clone(),
                every,
                config.stripe.accounts.clone(),
                replica.leading(),
            );
        }
        if let Some(retention) = config.event_retention {
            retention::spawn_pruner(core.db.clone(), retention, replica.leading());
        }
        reservations::spawn_sweeper(core.sessions.clone(), core.db.clone(), replica.leading());
        tracing::info!(
            address = %format!("http://{}:{port}", config.bind.ip()),
            database = config.database_url.backend(),
            stripe_max_rps = config.stripe.max_rps,
            catalog_products = config.catalog.products().len(),
            mail = if config.effects.smtp_url.is_some() { "smtp" } else { "files" },
            "fulfilld is listening"
        );
        if config.stripe.sandbox.is_some() {
            tracing::info!(
                "SANDBOX MODE (no STRIPE_SECRET_KEY): payments are simulated. Open {}/ to shop",
                config.public_url
            );
        }
        Ok(Self {
            port,
            server,
            metrics_server,
            replica,
            core,
            effects,
            shutdown_grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `METRICS_BIND`, when `/metrics` has an address of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    pub fn database(&self) -> &Database {
        &self.core.db
    }

    pub fn sessions(&self) -> &Sessions {
        &self.core.sessions
    }

    /// A handle that stops the server.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until `stop` completes (see [`shutdown_signal`]), then shuts down gracefully:
    /// no new connections; requests in flight answered, so every acknowledged event is
    /// stored; no new effects claimed; attempts in flight given `SHUTDOWN_GRACE_SECS` to
    /// finish, the rest cancelled and their effects handed back for the next process.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = self.server;
        if let Some((_, metrics)) = self.metrics_server {
            // Stops with the process: it holds nothing that needs draining.
            actix_web::rt::spawn(metrics);
        }
        tokio::pin!(server);
        tokio::select! {
            served = &mut server => return served.context("the HTTP server failed"),
            () = stop => {}
        }
        let grace = self.shutdown_grace;
        tracing::info!(
            grace_s = grace.as_secs(),
            live_session_actors = self.core.sessions.live_actors().await,
            "shutting down: finishing the requests and effects in flight"
        );
        let started = Instant::now();
        // The server future runs the server's command loop: poll it while it stops.
        let ((), served, effects) =
            tokio::join!(handle.stop(true), server, self.effects.shutdown(grace));
        self.replica.leave().await;
        tracing::info!(
            shutdown_ms = started.elapsed().as_millis(),
            effects_finished = effects.finished,
            effects_released = effects.released,
            "fulfilld stopped: requests drained, effects finished or handed back"
        );
        served.context("the HTTP server failed")
    }
}

/// A server for `/metrics` alone, on `address`.
fn metrics_server(
    address: SocketAddr,
    state: web::Data<AppState>,
    shutdown_grace: Duration,
) -> anyhow::Result<(u16, Server)> {
    let listener =
        listen(address).with_context(|| format!("could not listen on {address} (METRICS_BIND)"))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(shutdown_grace.as_secs())
    .listen(listener)?
    .run();
    Ok((port, server))
}

/// Completes on SIGTERM (a deploy, `docker stop`, systemd) or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops fulfilld");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Forgets the allowances of clients that went quiet, for as long as the server lives.
fn spawn_sweeper(clients: std::sync::Weak<ClientLimits>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(clients) = clients.upgrade() else {
                return;
            };
            clients.sweep();
        }
    });
}

/// Points the engine at a simulator mounted under `/sandbox` of this very server, and
/// returns that simulator, already sending its webhooks to `/webhook`.
fn sandbox(config: &mut Config, port: u16, payment_delay: Duration) -> Simulator {
    let ip = match config.bind.ip() {
        ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    let internal = format!("http://{}", SocketAddr::new(ip, port));
    config.stripe.api_base = format!("{internal}/sandbox");
    let simulator = Simulator::new(
        Arc::clone(&config.catalog),
        &format!("{}/sandbox", config.public_url),
        payment_delay,
    );
    simulator.redirect_only_under(&config.public_url);
    if let Some(secret) = config.stripe.webhook_secrets.first() {
        simulator.send_webhooks_to(&format!("{internal}/webhook"), secret.expose());
    }
    simulator
}
