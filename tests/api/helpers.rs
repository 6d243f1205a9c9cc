use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fulfilld::actors::Sessions;
use fulfilld::configuration::{
    CheckoutSettings, EffectSettings, LocaleSettings, LogFormat, Settings, TelemetrySettings,
};
use fulfilld::db::Database;
use fulfilld::db::inbox::EventView;
use fulfilld::domain::{Locale, Outcome, SessionId, Status};
use fulfilld::sandbox::{SessionSpec, StripeDouble};
use fulfilld::startup::Application;
use fulfilld::stripe::signature::signature_header;
use tempfile::TempDir;

pub const WEBHOOK_SECRET: &str = "whsec_test_fulfilld";
pub const STRIPE_SECRET_KEY: &str = "sk_test_fulfilld_secret";
/// The example catalog the README documents.
pub const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/catalog.toml");

/// A database backend the suite runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The server in `TEST_DATABASE_URL`; each test creates its own database there.
    Postgres(String),
}

/// SQLite always; PostgreSQL too when `TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    if let Ok(url) = std::env::var("TEST_DATABASE_URL")
        && !url.is_empty()
    {
        backends.push(Backend::Postgres(url));
    }
    backends
}

/// Waits until `db`'s inbox holds no event still to carry out and its outbox no effect
/// still to attempt, whichever processes work on it (see [`TestApp::drained`]).
pub async fn drained(db: &Database) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let figures = db.figures().await.expect("database answers");
        if figures.inbox_backlog == 0 && figures.pending_effects == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not drained on {}: {figures:?}",
            db.backend()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// PostgreSQL, when the suite has one; the test says it was skipped when there is none.
pub fn postgres(test: &str) -> Option<Backend> {
    let found = backends()
        .into_iter()
        .find(|backend| matches!(backend, Backend::Postgres(_)));
    if found.is_none() {
        eprintln!("{test}: skipped, it needs PostgreSQL (TEST_DATABASE_URL)");
    }
    found
}

/// A fresh, empty database for one test; a SQLite file lives as long as this value.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<TempDir>,
}

impl Backend {
    pub async fn fresh_database(&self) -> TestDatabase {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("fulfilld.db").display());
                TestDatabase {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres(server) => {
                let name = format!("fulfilld_test_{:016x}", fastrand::u64(..));
                let mut admin = AsyncPgConnection::establish(server)
                    .await
                    .expect("TEST_DATABASE_URL accepts connections");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("test database created");
                let base = server.split('?').next().unwrap_or(server);
                let (prefix, _) = base.rsplit_once('/').expect("URL has a path");
                TestDatabase {
                    url: format!("{prefix}/{name}"),
                    _dir: None,
                }
            }
        }
    }
}

/// Settings for a fulfilld pointed at `stripe` and `database_url`.
pub fn settings(database_url: &str, stripe: &str) -> Settings {
    Settings {
        bind: "127.0.0.1:0".parse().expect("address"),
        metrics_bind: None,
        public_url: "http://localhost:4242".into(),
        database_url: Some(database_url.into()),
        stripe_secret_key: Some(STRIPE_SECRET_KEY.into()),
        stripe_webhook_secret: Some(WEBHOOK_SECRET.into()),
        stripe_api_base: stripe.into(),
        stripe_max_rps: Some(1000),
        sandbox_anywhere: false,
        stripe_interactive_share: 50,
        log_format: LogFormat::Text,
        session_idle_secs: 60,
        sandbox_payment_delay_secs: 1,
        reconcile_every: Duration::ZERO,
        shutdown_grace_secs: 10,
        admin_token: None,
        client_lookups_per_min: 30,
        stripe_accounts: Vec::new(),
        trusted_proxies: Vec::new(),
        proxy_header: fulfilld::configuration::ProxyHeader::XForwardedFor,
        webhook_workers: 64,
        event_retention: Duration::from_secs(30 * 86_400),
        effects: EffectSettings {
            catalog: Some(CATALOG.into()),
            smtp_url: None,
            smtp_sync_gap: 1,
            mail_dir: "mail".into(),
            mail_from: "Test Shop <shop@shop.test>".into(),
            send_receipts: true,
            shipping_webhook_url: None,
            access_webhook_url: None,
            outbound_webhook_secret: None,
            access_signing_secret: None,
            effect_max_attempts: 6,
            effect_backoff_ms: 50,
            effect_timeout_secs: 3,
            effect_lease_secs: 2,
        },
        checkout: CheckoutSettings {
            reservation_minutes: 30,
            api_token: None,
            checkout_ui: fulfilld::configuration::CheckoutUi::Hosted,
            stripe_publishable_key: None,
        },
        telemetry: TelemetrySettings {
            otel_exporter_otlp_endpoint: None,
            otel_traces_sampler_arg: 1.0,
        },
        locale: LocaleSettings {
            locale: Locale::default(),
        },
    }
}

/// fulfilld running in this process, with its Stripe double.
pub struct TestApp {
    pub address: String,
    pub stripe: StripeDouble,
    pub db: Database,
    pub sessions: Sessions,
    pub client: reqwest::Client,
    pub backend: &'static str,
    /// Where mail is saved as `.eml` files when no SMTP server is configured.
    pub mail_dir: TempDir,
    backend_url: String,
    _database: TestDatabase,
}

pub async fn spawn_app(backend: &Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: &Backend, customize: impl FnOnce(&mut Settings)) -> TestApp {
    // Logs only when asked for: `TEST_LOG=1 cargo test`.
    if std::env::var_os("TEST_LOG").is_some() {
        let export = TelemetrySettings {
            otel_exporter_otlp_endpoint: None,
            otel_traces_sampler_arg: 1.0,
        };
        let _ = fulfilld::telemetry::init(LogFormat::Text, &export);
    }
    // It prices the sessions the storefront creates from the same catalog.
    let catalog = fulfilld::catalog::Catalog::load(std::path::Path::new(CATALOG)).expect("catalog");
    let stripe =
        StripeDouble::with_catalog(std::sync::Arc::new(catalog)).expect("Stripe double starts");
    let database = backend.fresh_database().await;
    let mail_dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = settings(&database.url, stripe.url());
    settings.effects.mail_dir = mail_dir.path().display().to_string();
    customize(&mut settings);
    let config = settings.validate().expect("valid test configuration");
    let app = Application::build(config).await.expect("fulfilld starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let db = app.database().clone();
    let sessions = app.sessions().clone();
    let backend = db.backend();
    actix_web::rt::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        address,
        stripe,
        db,
        sessions,
        client: reqwest::Client::new(),
        backend,
        mail_dir,
        backend_url: database.url.clone(),
        _database: database,
    }
}

/// A client that shows redirects rather than following them, as a test of a page that
/// sends the browser on needs.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A free port for a server that binds it itself, outside the kernel's ephemeral range
/// (32768 and up): no outgoing connection of another test can hold it when the server
/// binds, as one could a port the kernel handed out.
pub fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_768);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `raw` with quoted-printable undone: soft line breaks dropped, `=XX` as the byte.
pub fn quoted_printable(raw: &str) -> String {
    let raw = raw.replace("=\r\n", "");
    let (bytes, mut out) = (raw.as_bytes(), Vec::with_capacity(raw.len()));
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn unix_now() -> i64 {
    fulfilld::db::now_ms() / 1000
}

pub fn sign(body: &str) -> String {
    signature_header(WEBHOOK_SECRET, unix_now(), body.as_bytes())
}

/// `count` paid sessions of one `item` each, priced `base_amount`, `base_amount + 1`, …
pub fn paid_sessions(
    stripe: &StripeDouble,
    item: &str,
    base_amount: i64,
    count: i64,
) -> Vec<String> {
    (0..count)
        .map(|n| stripe.add_session(SessionSpec::paid(&[(item, base_amount + n, 1)])))
        .collect()
}

/// POSTs `body` to `/webhook` at `address` with `signature` as `Stripe-Signature`.
pub async fn post_webhook(
    client: &reqwest::Client,
    address: &str,
    body: String,
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{address}/webhook"))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    request.send().await.expect("webhook request sent")
}

impl TestApp {
    pub async fn post_webhook(&self, body: String, signature: Option<String>) -> reqwest::Response {
        post_webhook(&self.client, &self.address, body, signature).await
    }

    /// Delivers a correctly signed event of `event_type` about `session`.
    pub async fn deliver(
        &self,
        event_id: &str,
        event_type: &str,
        session: &str,
    ) -> reqwest::Response {
        let body = self.stripe.event_payload(event_id, event_type, session);
        let signature = sign(&body);
        self.post_webhook(body, Some(signature)).await
    }

    /// Delivers each session's signed `completed` event, all at once; returns the statuses.
    pub async fn deliver_completed(&self, sessions: &[String]) -> Vec<u16> {
        let deliveries = sessions.iter().map(|session| async move {
            self.deliver(
                &format!("evt_{session}"),
                "checkout.session.completed",
                session,
            )
            .await
            .status()
            .as_u16()
        });
        futures_util::future::join_all(deliveries).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// Runs the fulfilld binary against this app's database and Stripe double; asserts it
    /// succeeded and returns what it printed.
    pub async fn cli(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
            .args(args)
            .env("DATABASE_URL", self.database_url())
            .env("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY)
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("STRIPE_API_BASE", self.stripe.url())
            .env("RUST_LOG", "off")
            .output()
            .await
            .expect("fulfilld runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A GET that says, in `X-Forwarded-For`, it was forwarded for `client`.
    pub async fn get_from(&self, path: &str, client: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .header("X-Forwarded-For", client)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn outcome(&self, session: &str) -> Option<Outcome> {
        let id = SessionId::parse(session).expect("valid id");
        self.db.outcome(&id).await.expect("database answers")
    }

    /// Drops `table` behind the engine's back, so every query that needs it fails: an
    /// outage of the database, as far as those queries can tell.
    pub async fn drop_table(&self, table: &str) {
        self.execute(&format!("DROP TABLE {table}")).await;
    }

    /// Runs `statement` on the database behind the engine's back.
    pub async fn execute(&self, statement: &str) {
        execute_on(&self.backend_url, statement).await;
    }

    pub async fn effects(&self, session: &str) -> Vec<(String, String)> {
        let id = SessionId::parse(session).expect("valid id");
        self.db
            .effects_of(&id)
            .await
            .expect("database answers")
            .into_iter()
            .map(|(kind, status)| (kind.to_string(), status.to_string()))
            .collect()
    }

    /// Waits until the inbox holds no event still to carry out and the outbox no effect
    /// still to attempt: a settled state, after which nothing more happens by itself, so
    /// what did not happen by then will not.
    pub async fn drained(&self) {
        drained(&self.db).await;
    }

    pub fn database_url(&self) -> &str {
        &self.backend_url
    }

    /// The kinds of the effects enqueued for a session, oldest first.
    pub async fn effect_kinds(&self, session: &str) -> Vec<String> {
        self.effects(session)
            .await
            .into_iter()
            .map(|(kind, _)| kind)
            .collect()
    }

    /// Waits until every effect of `session` is done, and returns their kinds.
    pub async fn wait_for_effects(&self, session: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let effects = self.effects(session).await;
            if effects.iter().all(|(_, status)| status == "done") {
                return effects.into_iter().map(|(kind, _)| kind).collect();
            }
            assert!(
                Instant::now() < deadline,
                "effects of {session} not done: {effects:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The `.eml` files saved so far, by file name.
    pub fn mail_files(&self) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(self.mail_dir.path())
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".eml"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// How many of `sessions` are fulfilled in the database now.
    pub async fn count_fulfilled(&self, sessions: &[String]) -> usize {
        let mut count = 0;
        for session in sessions {
            let outcome = self.outcome(session).await;
            count += usize::from(outcome.is_some_and(|o| o.status == Status::Fulfilled));
        }
        count
    }

    /// Waits until `session` has `status` in the database.
    pub async fn wait_for(&self, session: &str, status: Status) -> Outcome {
        wait_for_status(&self.db, session, status).await
    }
}

pub async fn wait_for_status(db: &Database, session: &str, status: Status) -> Outcome {
    let id = SessionId::parse(session).expect("valid id");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = db.outcome(&id).await.expect("database answers");
        match outcome {
            Some(outcome) if outcome.status == status => return outcome,
            other if Instant::now() > deadline => {
                panic!(
                    "{session} did not reach {status:?} on {}: {other:?}",
                    db.backend()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Asserts that each session is fulfilled with exactly one receipt enqueued.
pub async fn assert_each_fulfilled_once(database_url: &str, sessions: &[String]) {
    let url = fulfilld::db::DatabaseUrl::parse(database_url).expect("database URL");
    let db = Database::connect(&url).await.expect("database answers");
    for session in sessions {
        wait_for_status(&db, session, Status::Fulfilled).await;
        let id = SessionId::parse(session).expect("valid id");
        let effects = db.effects_of(&id).await.expect("database answers");
        let kinds: Vec<_> = effects.iter().map(|(kind, _)| kind.as_str()).collect();
        assert_eq!(kinds, ["receipt"], "{session} on {}", db.backend());
    }
}

/// A fulfilld process started from the built binary.
pub struct Process {
    pub address: String,
    pub database_url: String,
    child: Child,
    mail_dir: TempDir,
}

impl Process {
    pub async fn start(database_url: &str, stripe: &str) -> Process {
        Self::start_with(database_url, stripe, &[]).await
    }

    /// Starts a process with extra environment variables.
    pub async fn start_with(database_url: &str, stripe: &str, env: &[(&str, String)]) -> Process {
        let (stderr, filter) = match std::env::var_os("TEST_LOG") {
            Some(_) => (Stdio::inherit(), "info"),
            None => (Stdio::null(), "warn"),
        };
        Self::spawn(database_url, stripe, env, stderr, filter).await
    }

    /// Starts a process that logs everything, down to debug, into `log`.
    pub async fn start_logging(
        database_url: &str,
        stripe: &str,
        env: &[(&str, String)],
        log: &std::path::Path,
    ) -> Process {
        let file = std::fs::File::create(log).expect("log file created");
        Self::spawn(database_url, stripe, env, Stdio::from(file), "debug").await
    }

    async fn spawn(
        database_url: &str,
        stripe: &str,
        env: &[(&str, String)],
        stderr: Stdio,
        filter: &str,
    ) -> Process {
        let mail_dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_fulfilld"))
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY)
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("STRIPE_API_BASE", stripe)
            .env("STRIPE_MAX_RPS", "1000")
            .env("RUST_LOG", filter)
            .env("CATALOG", CATALOG)
            .env("MAIL_DIR", mail_dir.path())
            .env("EFFECT_BACKOFF_MS", "50")
            .env("EFFECT_TIMEOUT_SECS", "1")
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("fulfilld binary starts");
        let process = Process {
            address: format!("http://127.0.0.1:{port}"),
            database_url: database_url.to_owned(),
            child,
            mail_dir,
        };
        process.wait_ready().await;
        process
    }

    /// The process's id, as PostgreSQL's `application_name` of its connections ends.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `.eml` files the process has saved so far.
    pub fn mail_files(&self) -> Vec<String> {
        std::fs::read_dir(self.mail_dir.path())
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".eml"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the process answers `/readyz` with 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = client.get(format!("{}/readyz", self.address)).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fulfilld at {} did not become ready", self.address);
    }

    /// SIGTERM, as a deploy sends it; waits up to `within` for the process to exit, and
    /// returns how it exited and how long that took.
    pub fn terminate(mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let sent = Instant::now();
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(signalled.success(), "SIGTERM sent");
        while sent.elapsed() < within {
            if let Some(status) = self.child.try_wait().expect("process waited on") {
                return (status, sent.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("fulfilld did not exit within {within:?} of SIGTERM");
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIG{signal} sent");
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    pub fn kill_9(mut self) {
        self.child.kill().expect("process killed");
        self.child.wait().expect("process reaped");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until event `id` satisfies `check`, and returns it.
pub async fn wait_for_event(
    db: &fulfilld::db::Database,
    id: &str,
    check: impl Fn(&EventView) -> bool,
) -> EventView {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = db.list_events(false, 100).await.expect("db");
        let event = events.into_iter().find(|event| event.id == id);
        if let Some(event) = event.filter(|event| check(event)) {
            return event;
        }
        assert!(Instant::now() < deadline, "{id} on {}", db.backend());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends one signed `completed` event per session to `process`; each must be acknowledged.
pub async fn deliver_each(stripe: &StripeDouble, process: &Process, sessions: &[String]) {
    let client = reqwest::Client::new();
    for session in sessions {
        let body = stripe.event_payload(
            &format!("evt_{session}"),
            "checkout.session.completed",
            session,
        );
        let signature = sign(&body);
        let status = post_webhook(&client, &process.address, body, Some(signature))
            .await
            .status();
        assert_eq!(status, 200);
    }
}

/// Runs `work` on a connection of its own to the SQLite database at `url`, on the
/// blocking pool. The engine's writer may hold the write lock for a group's few
/// milliseconds, and it commits that group on the test's thread: waiting for the lock
/// there would keep it from ever letting go.
async fn on_sqlite<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut diesel::SqliteConnection) -> T + Send + 'static,
) -> T {
    use diesel::Connection;
    let path = url.trim_start_matches("sqlite://").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = diesel::SqliteConnection::establish(&path).expect("SQLite opens");
        diesel::RunQueryDsl::execute(diesel::sql_query("PRAGMA busy_timeout = 5000"), &mut conn)
            .expect("busy timeout set");
        work(&mut conn)
    })
    .await
    .unwrap_or_else(|joined| std::panic::resume_unwind(joined.into_panic()))
}

/// Runs `statement` on the database at `url`, behind any engine's back.
pub async fn execute_on(url: &str, statement: &str) {
    match url {
        url if url.starts_with("sqlite://") => {
            let statement = statement.to_owned();
            on_sqlite(url, move |conn| {
                diesel::RunQueryDsl::execute(diesel::sql_query(statement), conn)
                    .expect("statement runs");
            })
            .await;
        }
        url => {
            let mut conn = AsyncPgConnection::establish(url)
                .await
                .expect("PostgreSQL answers");
            diesel::sql_query(statement)
                .execute(&mut conn)
                .await
                .expect("statement runs");
        }
    }
}

#[derive(diesel::QueryableByName)]
struct TextRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    row: String,
}

/// The rows `query` reads from the database at `url`, behind any engine's back; `query`
/// reads one text column, `row`.
pub async fn rows_on(url: &str, query: &str) -> Vec<String> {
    let rows = match url {
        url if url.starts_with("sqlite://") => {
            let query = query.to_owned();
            on_sqlite(url, move |conn| {
                diesel::RunQueryDsl::load::<TextRow>(diesel::sql_query(query), conn)
                    .expect("query runs")
            })
            .await
        }
        url => {
            let mut conn = AsyncPgConnection::establish(url)
                .await
                .expect("PostgreSQL answers");
            diesel::sql_query(query)
                .load::<TextRow>(&mut conn)
                .await
                .expect("query runs")
        }
    };
    rows.into_iter().map(|row| row.row).collect()
}
