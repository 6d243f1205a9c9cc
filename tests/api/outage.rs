//! PostgreSQL going away under load, for seconds, two ways: a server of the test's own,
//! stopped with `pg_ctl stop` and started again (its sessions are told it is shutting
//! down, then connections are refused), and a proxy between fulfilld and the shared
//! server that cuts every connection mid-conversation and refuses new ones.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use fulfilld::sandbox::StripeDouble;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{
    Process, assert_each_fulfilled_once, paid_sessions, post_webhook, postgres, sign,
};

#[derive(diesel::QueryableByName)]
struct Seen {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seen: i64,
}

/// A TCP proxy to `upstream` that can be taken down and brought back.
struct Proxy {
    port: u16,
    /// `true` while the database is "down": open connections are cut, new ones closed.
    down: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("free port");
        let port = listener.local_addr().expect("address").port();
        let (down, watching) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut watching = watching.clone();
                if *watching.borrow() {
                    // Down: the connection is closed at once.
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // Taken down: both ends are dropped, mid-conversation.
                        _ = watching.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self { port, down }
    }

    fn take_down(&self) {
        self.down.send_replace(true);
    }

    fn bring_back(&self) {
        self.down.send_replace(false);
    }
}

/// What takes the database away: a server of the test's own, or a proxy before the
/// shared one.
enum Fault {
    Stopped(PrivateServer),
    Cut(Proxy),
}

impl Fault {
    async fn take_down(&self) {
        match self {
            Self::Stopped(server) => server.pg_ctl(&["stop", "-m", "fast"]).await,
            Self::Cut(proxy) => proxy.take_down(),
        }
    }

    async fn bring_back(&self) {
        match self {
            Self::Stopped(server) => server.start().await,
            Self::Cut(proxy) => proxy.bring_back(),
        }
    }
}

/// A PostgreSQL server of the test's own, on a port of its own, run as the `postgres`
/// user from the machine's installation; removed when dropped.
struct PrivateServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivateServer {
    /// `None` without PostgreSQL's programs or without root to run them as `postgres`.
    async fn start_new() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|version| version.path().join("bin"))
            .find(|bin| bin.join("pg_ctl").exists())?;
        let dir = tempfile::tempdir().ok()?;
        let owned = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir.path())
            .status()
            .ok()?;
        let initdb = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["--no-sync", "-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !owned.success() || !initdb.success() {
            return None;
        }
        let server = Self {
            dir,
            bin,
            port: crate::helpers::free_port(),
        };
        server.start().await;
        Some(server)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        self.pg_ctl(&["start", "-o", &options]).await;
    }

    /// Runs `pg_ctl` on this server, waiting until it is done.
    async fn pg_ctl(&self, args: &[&str]) {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-w", "-l"])
            .arg(self.dir.path().join("log"))
            .args(args)
            .stdout(Stdio::null());
        let status = tokio::task::spawn_blocking(move || command.status())
            .await
            .expect("pg_ctl ran")
            .expect("pg_ctl started");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[actix_web::test]
async fn postgres_stopped_for_seconds_under_load_gets_503s_then_everything_resumes_once() {
    let Some(server) = PrivateServer::start_new().await else {
        eprintln!(
            "postgres_stopped_for_seconds_under_load_gets_503s_then_everything_resumes_once: \
             skipped, it needs PostgreSQL's programs and root to run them as postgres"
        );
        return;
    };
    let url = server.url();
    outage_under_load(&Fault::Stopped(server), &url, &url).await;
}

#[actix_web::test]
async fn postgres_cut_off_for_seconds_under_load_gets_503s_then_everything_resumes_once() {
    let Some(backend) =
        postgres("postgres_cut_off_for_seconds_under_load_gets_503s_then_everything_resumes_once")
    else {
        return;
    };
    let database = backend.fresh_database().await;
    let mut url = url::Url::parse(&database.url).expect("database URL");
    let upstream = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(upstream).await;
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(proxy.port)).expect("port");
    outage_under_load(&Fault::Cut(proxy), url.as_str(), &database.url).await;
}

/// fulfilld on `database_url` takes deliveries while `fault` takes the database away for
/// four seconds; `direct_url` reaches the database without the fault.
async fn outage_under_load(fault: &Fault, database_url: &str, direct_url: &str) {
    let stripe = StripeDouble::start().expect("Stripe double starts");
    let process = Process::start(database_url, stripe.url()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");

    // Deliveries one after another, as Stripe sends them, while the database goes.
    let sessions = paid_sessions(&stripe, "Kettle", 3000, 400);
    let stop = Arc::new(AtomicBool::new(false));
    let deliveries: Vec<(String, String)> = sessions
        .iter()
        .enumerate()
        .map(|(n, session)| {
            let body = stripe.event_payload(
                &format!("evt_outage_{n}"),
                "checkout.session.completed",
                session,
            );
            (session.clone(), body)
        })
        .collect();
    let load = {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        let address = process.address.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refused = 0;
            for (session, body) in &deliveries {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let answer = post_webhook(&client, &address, body.clone(), Some(sign(body))).await;
                match answer.status().as_u16() {
                    200 => acknowledged.push(session.clone()),
                    503 => refused += 1,
                    other => panic!("{other} for a delivery during the outage"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acknowledged, refused)
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    fault.take_down().await;
    let down_at = Instant::now();
    // Not ready, and the customer gets the friendly page, while it is down.
    let mut saw_not_ready = false;
    while down_at.elapsed() < Duration::from_secs(4) {
        let ready = client
            .get(format!("{}/readyz", process.address))
            .send()
            .await
            .expect("answered");
        saw_not_ready |= ready.status() == 503;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_not_ready, "/readyz never said not ready");
    let page = client
        .get(format!(
            "{}/after-checkout?session_id={}",
            process.address, sessions[399]
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(page.status(), 503);

    fault.bring_back().await;
    let back_at = Instant::now();
    loop {
        let ready = client
            .get(format!("{}/readyz", process.address))
            .send()
            .await
            .expect("answered");
        if ready.status() == 200 {
            break;
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(15),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "ready again {:?} after the database came back",
        back_at.elapsed()
    );
    // The replica's own connections are back too: its heartbeat moves again.
    let mut admin = AsyncPgConnection::establish(direct_url)
        .await
        .expect("PostgreSQL answers");
    let seen = async |admin: &mut AsyncPgConnection| {
        let query = diesel::sql_query("SELECT coalesce(max(seen_at), 0) AS seen FROM replicas");
        diesel_async::RunQueryDsl::get_result::<Seen>(query, admin)
            .await
            .expect("replicas read")
            .seen
    };
    let before = seen(&mut admin).await;
    while seen(&mut admin).await <= before {
        assert!(
            back_at.elapsed() < Duration::from_secs(15),
            "no heartbeat since"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And a delivery now is acknowledged.
    let late = paid_sessions(&stripe, "Teapot", 4000, 1).remove(0);
    let body = stripe.event_payload("evt_after_outage", "checkout.session.completed", &late);
    let answer = post_webhook(&client, &process.address, body.clone(), Some(sign(&body))).await;
    assert_eq!(answer.status(), 200, "after the database came back");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acknowledged, refused) = load.await.expect("the load ran");
    acknowledged.push(late);
    assert!(refused > 0, "no delivery met the outage");
    assert!(!acknowledged.is_empty());

    // Every acknowledged event is carried out, once; Stripe retries the refused ones.
    assert_each_fulfilled_once(direct_url, &acknowledged).await;
    eprintln!(
        "{} deliveries acknowledged, {refused} answered 503 during the outage",
        acknowledged.len()
    );
}
