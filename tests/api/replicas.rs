//! Replicas on one PostgreSQL act as one engine: one Stripe budget, one reconcile leader;
//! an operator's command that calls Stripe takes its share of that budget while it runs.

use std::time::{Duration, Instant};

use fulfilld::sandbox::{SessionSpec, StripeDouble};
use futures_util::future::join_all;

use crate::helpers::{
    CATALOG, Process, STRIPE_SECRET_KEY, WEBHOOK_SECRET, assert_each_fulfilled_once, backends,
    post_webhook, postgres, sign,
};

/// The deployment's budget of Stripe calls per second.
const BUDGET: usize = 30;

/// What one replica's metrics say: (this replica, the leader, replicas alive); all empty
/// while it does not answer (a replica just thawed drops the connections that idled out
/// meanwhile).
async fn standing(client: &reqwest::Client, process: &Process) -> (String, String, usize) {
    let answer = client
        .get(format!("{}/metrics", process.address))
        .send()
        .await;
    let text = match answer {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let label = |name: &str| {
        let info = text
            .lines()
            .find(|line| line.starts_with("fulfilld_replica_info{"))
            .unwrap_or_default();
        info.split_once(&format!("{name}=\""))
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(value, _)| value.to_owned())
            .unwrap_or_default()
    };
    let alive = text
        .lines()
        .find_map(|line| line.strip_prefix("fulfilld_replicas "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    (label("replica"), label("leader"), alive)
}

/// Waits until every process sees `count` replicas and the same leader, one of them;
/// returns the index of the leader's process.
async fn agreed(client: &reqwest::Client, processes: &[&Process], count: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let standings = join_all(processes.iter().map(|p| standing(client, p))).await;
        let leader = &standings[0].1;
        let leader_at = standings.iter().position(|(name, _, _)| name == leader);
        if standings
            .iter()
            .all(|(_, l, alive)| l == leader && *alive == count)
            && let Some(at) = leader_at
        {
            return at;
        }
        assert!(Instant::now() < deadline, "no agreement: {standings:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This replica's share of the budget, from its metrics.
async fn pacer_rate(client: &reqwest::Client, process: &Process) -> f64 {
    metric(client, process, "fulfilld_stripe_pacer_rate").await
}

/// The value of the unlabelled metric `name` on `process`.
async fn metric(client: &reqwest::Client, process: &Process, name: &str) -> f64 {
    let text = client
        .get(format!("{}/metrics", process.address))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or(f64::NAN)
}

#[actix_web::test]
async fn three_replicas_share_one_stripe_budget_and_one_leader() {
    // Replicas share PostgreSQL; without TEST_DATABASE_URL there is none to share.
    let Some(backend) = postgres("three_replicas_share_one_stripe_budget_and_one_leader") else {
        return;
    };
    let stripe = StripeDouble::start().expect("Stripe double starts");
    let database = backend.fresh_database().await;
    let env = [("STRIPE_MAX_RPS", BUDGET.to_string())];
    let replicas = [
        Process::start_with(&database.url, stripe.url(), &env).await,
        Process::start_with(&database.url, stripe.url(), &env).await,
        Process::start_with(&database.url, stripe.url(), &env).await,
    ];
    let client = reqwest::Client::new();
    let all: Vec<&Process> = replicas.iter().collect();
    agreed(&client, &all, 3).await;
    for replica in &replicas {
        assert_eq!(pacer_rate(&client, replica).await, BUDGET as f64 / 3.0);
    }

    // A storm spread over the replicas, as a load balancer spreads Stripe's deliveries;
    // every fourth event is delivered again, to another replica.
    let sessions: Vec<String> = (0..150)
        .map(|n| stripe.add_session(SessionSpec::paid(&[("Print", 1000 + n, 1)])))
        .collect();
    let calls_before = stripe.call_times().len();
    let http = &client;
    let deliveries = sessions.iter().enumerate().flat_map(|(n, session)| {
        let body = stripe.event_payload(
            &format!("evt_replicas_{n}"),
            "checkout.session.completed",
            session,
        );
        let mut targets = vec![&replicas[n % 3]];
        if n % 4 == 0 {
            targets.push(&replicas[(n + 1) % 3]);
        }
        targets.into_iter().map(move |replica| {
            let body = body.clone();
            async move {
                let signature = sign(&body);
                post_webhook(http, &replica.address, body, Some(signature))
                    .await
                    .status()
                    .as_u16()
            }
        })
    });
    let statuses = join_all(deliveries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_each_fulfilled_once(&database.url, &sessions).await;

    // What Stripe saw: the budget, between the three.
    let mut times = stripe.call_times().split_off(calls_before);
    times.sort();
    assert!(times.len() >= sessions.len(), "{} calls", times.len());
    assert_paced(&times, BUDGET, "a budget");

    // The leader dies without a word: a survivor leads, and the two share the budget.
    let [first, second, third] = replicas;
    let leader = agreed(&client, &[&first, &second, &third], 3).await;
    let mut survivors = Vec::new();
    for (at, replica) in [first, second, third].into_iter().enumerate() {
        if at == leader {
            replica.kill_9();
        } else {
            survivors.push(replica);
        }
    }
    let killed_at = Instant::now();
    let survivors: Vec<&Process> = survivors.iter().collect();
    agreed(&client, &survivors, 2).await;
    let failover = killed_at.elapsed();
    assert!(failover < Duration::from_secs(10), "took {failover:?}");
    for survivor in &survivors {
        assert_eq!(pacer_rate(&client, survivor).await, BUDGET as f64 / 2.0);
    }

    // The new leader freezes (SIGSTOP): its connection stays open, yet within seconds the
    // other replica has the whole budget and the lead.
    let leader = agreed(&client, &survivors, 2).await;
    let (frozen, other) = (survivors[leader], survivors[1 - leader]);
    frozen.signal("STOP");
    let frozen_at = Instant::now();
    let deadline = frozen_at + Duration::from_secs(30);
    loop {
        let (name, leader, alive) = standing(&client, other).await;
        if leader == name && alive == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still led by {leader} ({alive} alive)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = frozen_at.elapsed();
    assert_eq!(pacer_rate(&client, other).await, BUDGET as f64);
    // Thawed, it finds it no longer leads, and the two share again.
    frozen.signal("CONT");
    assert_eq!(agreed(&client, &[frozen, other], 2).await, 1);
    assert!(takeover < Duration::from_secs(20), "took {takeover:?}");
}

/// Replicas of a new deployment boot together on an empty database: one migrates it, the
/// others wait for it, and all three serve.
#[actix_web::test]
async fn three_replicas_booting_at_once_migrate_an_empty_database_once() {
    if let Some(backend) = postgres("three_replicas_booting_at_once_migrate_an_empty_database_once")
    {
        for _ in 0..3 {
            let stripe = StripeDouble::start().expect("Stripe double starts");
            let database = backend.fresh_database().await;
            let replicas =
                join_all((0..3).map(|_| Process::start(&database.url, stripe.url()))).await;
            let session = stripe.add_session(SessionSpec::paid(&[("Book", 1500, 1)]));
            let body = stripe.event_payload("evt_boot", "checkout.session.completed", &session);
            let client = reqwest::Client::new();
            for replica in &replicas {
                let answer =
                    post_webhook(&client, &replica.address, body.clone(), Some(sign(&body))).await;
                assert_eq!(answer.status(), 200);
            }
            assert_each_fulfilled_once(&database.url, &[session]).await;
        }
    }
}

/// `fulfilld reconcile --since 1h`, started beside the replicas on `database_url`.
fn reconcile_command(database_url: &str, stripe: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(["reconcile", "--since", "1h"])
        .env("DATABASE_URL", database_url)
        .env("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY)
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("STRIPE_API_BASE", stripe)
        .env("STRIPE_MAX_RPS", BUDGET.to_string())
        .env("CATALOG", CATALOG)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("fulfilld reconcile starts")
}

/// Waits until `server` counts `commands` commands beside it, one replica (itself), and
/// has `share` calls per second; fails if `command` ends first.
async fn sees_commands(
    client: &reqwest::Client,
    server: &Process,
    command: Option<&mut tokio::process::Child>,
    commands: f64,
    share: f64,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut command = command;
    loop {
        let seen = (
            metric(client, server, "fulfilld_stripe_budget_commands").await,
            metric(client, server, "fulfilld_replicas").await,
            pacer_rate(client, server).await,
        );
        if seen == (commands, 1.0, share) {
            return;
        }
        if let Some(command) = command.as_mut() {
            let ended = command.try_wait().expect("command waited on");
            assert!(
                ended.is_none(),
                "the command ended first ({ended:?}); {seen:?}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "(commands, replicas, rate) {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Commands on `database_url` sharing the budget, as the `replicas` table holds them.
async fn command_rows(database_url: &str) -> i64 {
    use diesel::sql_types::BigInt;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let query = diesel::sql_query("SELECT COUNT(*) AS n FROM replicas WHERE NOT serves");
    let count: Count = if let Some(path) = database_url.strip_prefix("sqlite://") {
        use diesel::Connection;
        let mut conn = diesel::SqliteConnection::establish(path).expect("SQLite opens");
        diesel::RunQueryDsl::get_result(query, &mut conn).expect("replicas read")
    } else {
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        let mut conn = AsyncPgConnection::establish(database_url)
            .await
            .expect("PostgreSQL answers");
        query.get_result(&mut conn).await.expect("replicas read")
    };
    count.n
}

#[actix_web::test]
async fn a_cli_command_beside_a_replica_takes_half_the_stripe_budget_until_it_ends() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        // No scheduled reconcile: every Stripe call below is the command's.
        let env = [
            ("STRIPE_MAX_RPS", BUDGET.to_string()),
            ("RECONCILE_EVERY", "0".to_owned()),
        ];
        let server = Process::start_with(&database.url, stripe.url(), &env).await;
        let client = reqwest::Client::new();
        let whole = BUDGET as f64;
        let half = whole / 2.0;
        sees_commands(&client, &server, None, 0.0, whole).await;

        // Complete sessions no webhook delivered: reconcile fetches each one's line items.
        let missed: Vec<String> = (0..2 * BUDGET)
            .map(|n| stripe.add_session(SessionSpec::paid(&[("Atlas", 1000 + n as i64, 1)])))
            .collect();
        let calls_before = stripe.call_times().len();
        let mut reconcile = reconcile_command(&database.url, stripe.url());
        sees_commands(&client, &server, Some(&mut reconcile), 1.0, half).await;
        let finished = reconcile.wait_with_output().await.expect("reconcile ends");
        assert!(
            finished.status.success(),
            "{}",
            String::from_utf8_lossy(&finished.stderr)
        );
        assert_each_fulfilled_once(&database.url, &missed).await;

        // The command's calls kept to its half: at most half the budget in any second,
        // plus its bucket's quarter second and a tenth for the calls' travel.
        let mut times = stripe.call_times().split_off(calls_before);
        times.sort();
        assert!(times.len() >= missed.len(), "{} calls", times.len());
        let share = BUDGET / 2;
        assert_paced(&times, share, &format!("a share on {backend:?}"));
        // It left as it ended, and the replica has the whole budget again.
        assert_eq!(command_rows(&database.url).await, 0, "{backend:?}");
        sees_commands(&client, &server, None, 0.0, whole).await;

        // Interrupted (Ctrl-C) while Stripe hangs, it leaves all the same.
        stripe.set_delay(Duration::from_secs(60));
        let mut interrupted = reconcile_command(&database.url, stripe.url());
        sees_commands(&client, &server, Some(&mut interrupted), 1.0, half).await;
        let pid = interrupted.id().expect("command runs").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGINT sent");
        let ended = interrupted
            .wait_with_output()
            .await
            .expect("reconcile ends");
        assert!(!ended.status.success());
        let said = String::from_utf8_lossy(&ended.stderr);
        assert!(said.contains("interrupted"), "{said}");
        assert_eq!(command_rows(&database.url).await, 0, "{backend:?}");
        sees_commands(&client, &server, None, 0.0, whole).await;

        // Killed, it cannot say so: its heartbeat runs out, as a replica's would.
        let mut killed = reconcile_command(&database.url, stripe.url());
        sees_commands(&client, &server, Some(&mut killed), 1.0, half).await;
        killed.kill().await.expect("command killed");
        assert_eq!(command_rows(&database.url).await, 1, "{backend:?}");
        sees_commands(&client, &server, None, 0.0, whole).await;
        stripe.set_delay(Duration::ZERO);
    }
}

/// Asserts that Stripe saw the calls at `times` (sorted) paced at `rate` a second: never
/// more in one second than the rate, the quarter second's burst the buckets hold between
/// them and a fifth of a second's worth for the calls' own travel (a call sent late and
/// the next on time land closer together than they left: three servers, the test and
/// the rest of the suite share two cores); and the rate on average.
fn assert_paced(times: &[Instant], rate: usize, of: &str) {
    let busiest = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= rate + rate / 4 + rate / 5,
        "{busiest} calls in one second, over {of} of {rate}/s"
    );
    let span = times[times.len() - 1]
        .duration_since(times[0])
        .as_secs_f64();
    let sustained = (times.len() - rate / 4) as f64 / span;
    assert!(
        sustained <= rate as f64 * 1.05,
        "{} calls in {span:.2} s: {sustained:.1}/s over {of} of {rate}/s",
        times.len()
    );
}
