//! `/metrics`: what an operator's Prometheus sees, counted by a real process.

use std::time::{Duration, Instant};

use fulfilld::sandbox::{SessionSpec, StripeDouble};

use crate::helpers::{Process, backends, free_port, post_webhook, sign};

/// The value of one series (`name{labels}`) in a scrape, if present.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let response = client.get(url).send().await.expect("scrape sent");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap_or("");
    assert!(content_type.contains("openmetrics-text"), "{content_type}");
    response.text().await.expect("scrape body")
}

#[actix_web::test]
async fn metrics_count_deliveries_fulfilments_stripe_calls_and_effects_on_their_own_address() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let metrics_port = free_port();
        let process = Process::start_with(
            &database.url,
            stripe.url(),
            &[("METRICS_BIND", format!("127.0.0.1:{metrics_port}"))],
        )
        .await;
        let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
        let client = reqwest::Client::new();
        let sessions: Vec<String> = (0..2)
            .map(|n| stripe.add_session(SessionSpec::paid(&[("Book", 1000 + n, 1)])))
            .collect();

        // Two new events, one duplicate, one forged.
        let mut bodies: Vec<String> = sessions
            .iter()
            .map(|session| {
                stripe.event_payload(
                    &format!("evt_{session}"),
                    "checkout.session.completed",
                    session,
                )
            })
            .collect();
        bodies.push(bodies[0].clone());
        for body in bodies {
            let signature = sign(&body);
            let status = post_webhook(&client, &process.address, body, Some(signature)).await;
            assert_eq!(status.status(), 200);
        }
        let forged = post_webhook(
            &client,
            &process.address,
            "{}".into(),
            Some("t=1,v1=00".into()),
        )
        .await;
        assert_eq!(forged.status(), 400);

        // The receipts are sent when the counters say so, and the figures, read every few
        // seconds, catch up.
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            let text = scrape(&client, &metrics_url).await;
            let done = r#"fulfilld_effect_attempts_total{kind="receipt",outcome="done"}"#;
            let settled = value(&text, done) == Some(2.0)
                && value(&text, "fulfilld_effects_pending") == Some(0.0)
                && value(&text, "fulfilld_inbox_backlog") == Some(0.0);
            if settled || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let expect = [
            ("fulfilld_webhooks_received_total", 4.0),
            (
                r#"fulfilld_webhooks_refused_total{reason="signature"}"#,
                1.0,
            ),
            (r#"fulfilld_webhooks_stored_total{outcome="new"}"#, 2.0),
            (
                r#"fulfilld_webhooks_stored_total{outcome="duplicate"}"#,
                1.0,
            ),
            ("fulfilld_webhook_ack_duration_seconds_count", 4.0),
            (r#"fulfilld_fulfillments_total{outcome="fulfilled"}"#, 2.0),
            (
                r#"fulfilld_stripe_requests_total{endpoint="list_line_items",status="200"}"#,
                2.0,
            ),
            (
                r#"fulfilld_effect_attempts_total{kind="receipt",outcome="done"}"#,
                2.0,
            ),
            ("fulfilld_inbox_backlog", 0.0),
            ("fulfilld_inbox_oldest_unprocessed_age_seconds", 0.0),
            ("fulfilld_events_dead", 0.0),
            ("fulfilld_effects_dead", 0.0),
            ("fulfilld_effects_pending", 0.0),
            ("fulfilld_database_up", 1.0),
            ("fulfilld_stripe_pacer_rate", 1000.0),
        ];
        for (series, expected) in expect {
            assert_eq!(
                value(&text, series),
                Some(expected),
                "{series} on {}:\n{text}",
                process.database_url
            );
        }
        for series in [
            r#"fulfilld_stripe_pacer_wait_seconds_count{priority="background"}"#,
            "fulfilld_db_transaction_duration_seconds_count",
            "fulfilld_db_wait_seconds_count",
            "fulfilld_session_actors",
        ] {
            assert!(value(&text, series).is_some(), "{series} missing:\n{text}");
        }
        // Which replica this is, and which leads: here, and not on /readyz for anyone.
        let info = text
            .lines()
            .find(|line| line.starts_with("fulfilld_replica_info{"))
            .expect("replica info");
        assert!(
            info.contains("replica=\"") && info.contains("leader=\""),
            "{info}"
        );
        let ready = client
            .get(format!("{}/readyz", process.address))
            .send()
            .await
            .expect("request sent");
        assert_eq!(ready.status(), 200);
        assert_eq!(ready.text().await.expect("body"), "ready\n");

        // No label carries an id: the series stay few however many sessions there are.
        assert!(
            !text.contains("cs_test_") && !text.contains("evt_"),
            "{text}"
        );

        // With METRICS_BIND, the public address does not serve them.
        let public = client
            .get(format!("{}/metrics", process.address))
            .send()
            .await
            .expect("request sent");
        assert_eq!(public.status(), 404);
    }
}

#[actix_web::test]
async fn without_metrics_bind_metrics_are_served_on_bind() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let process = Process::start(&database.url, stripe.url()).await;
        let text = scrape(
            &reqwest::Client::new(),
            &format!("{}/metrics", process.address),
        )
        .await;
        assert_eq!(value(&text, "fulfilld_webhooks_received_total"), Some(0.0));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
