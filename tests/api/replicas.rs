//! Replicas on one PostgreSQL act as one engine: one Stripe budget, one reconcile leader.

use std::time::{Duration, Instant};

use fulfilld::sandbox::{SessionSpec, StripeDouble};
use futures_util::future::join_all;

use crate::helpers::{Process, assert_each_fulfilled_once, post_webhook, postgres, sign};

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
    let text = client
        .get(format!("{}/metrics", process.address))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| line.strip_prefix("fulfilld_stripe_pacer_rate "))
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

    // What Stripe saw: never more than the budget a second, plus the quarter-second
    // burst the replicas' buckets hold between them and a tenth of a second's worth for
    // the calls' own travel (a call sent late and the next on time land closer together
    // than they left); and the budget on average.
    let mut times = stripe.call_times().split_off(calls_before);
    times.sort();
    assert!(times.len() >= sessions.len(), "{} calls", times.len());
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
        busiest <= BUDGET + BUDGET / 4 + BUDGET / 10,
        "{busiest} calls in one second, over a budget of {BUDGET}/s"
    );
    let span = times[times.len() - 1]
        .duration_since(times[0])
        .as_secs_f64();
    let sustained = (times.len() - BUDGET / 4) as f64 / span;
    assert!(
        sustained <= BUDGET as f64 * 1.05,
        "{} calls in {span:.2} s: {sustained:.1}/s over a budget of {BUDGET}/s",
        times.len()
    );

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
