//! The outbox across processes: effects survive a `kill -9` and are shared by replicas,
//! each done once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fulfilld::db::{Database, DatabaseUrl};
use fulfilld::domain::EffectStatus;
use fulfilld::sandbox::{SessionSpec, StripeDouble};
use futures_util::future::join_all;

use crate::effects::order;
use crate::helpers::{Process, backends, drained, post_webhook, sign};
use crate::smtp::SmtpServer;
use crate::warehouse::Warehouse;

/// Delivers each session's `completed` event once to each of `processes`, all at once,
/// and asserts every delivery was acknowledged.
async fn deliver_to_all(stripe: &StripeDouble, sessions: &[String], processes: &[&Process]) {
    let client = &reqwest::Client::new();
    let deliveries = sessions.iter().enumerate().flat_map(|(n, session)| {
        let body = stripe.event_payload(
            &format!("evt_outbox_{n}"),
            "checkout.session.completed",
            session,
        );
        processes.iter().map(move |process| {
            let body = body.clone();
            async move {
                let signature = sign(&body);
                post_webhook(client, &process.address, body, Some(signature))
                    .await
                    .status()
                    .as_u16()
            }
        })
    });
    let statuses = join_all(deliveries.collect::<Vec<_>>()).await;
    assert!(
        statuses.iter().all(|status| *status == 200),
        "{statuses:?} from {}",
        processes[0].database_url
    );
}

#[actix_web::test]
async fn receipts_in_flight_at_a_kill_9_all_arrive_after_a_restart_and_none_twice() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let smtp = SmtpServer::start();
        // A busy mail server: receipts are still going out when the process dies.
        smtp.slow_down(Duration::from_millis(100));
        // A budget no busy machine overruns: a deadline firing after a message went out
        // would be the SMTP sync gap, which this test is not about.
        let env = [
            ("SMTP_URL", smtp.url()),
            ("EFFECT_TIMEOUT_SECS", "10".into()),
        ];
        let process = Process::start_with(&database.url, stripe.url(), &env).await;
        let sessions: Vec<String> = (0..200)
            .map(|n| stripe.add_session(SessionSpec::paid(&[("Poster", 1000 + n, 1)])))
            .collect();
        deliver_to_all(&stripe, &sessions, &[&process]).await;

        smtp.wait_for(20).await;
        // Hold the server's answers, so that attempts are in flight (sent, unanswered)
        // when the process dies; a held message is never accepted.
        smtp.hold();
        let deadline = Instant::now() + Duration::from_secs(10);
        while smtp.held() == 0 {
            assert!(
                Instant::now() < deadline,
                "no receipt was in flight on {backend:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Every receipt the server accepted is recorded as sent before the kill: this test
        // is about receipts in flight, not about the commit after a `250` (the sync gap).
        let db = Database::connect(&DatabaseUrl::parse(&database.url).expect("url"))
            .await
            .expect("db");
        loop {
            let done = db
                .list_effects(Some(EffectStatus::Done), 1000)
                .await
                .expect("db")
                .len();
            if done == smtp.accepted().len() {
                break;
            }
            assert!(Instant::now() < deadline, "{done} recorded on {backend:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = smtp.accepted().len();
        process.kill_9();
        smtp.release();
        assert!(
            before < sessions.len(),
            "all receipts went out before the kill"
        );

        let _restarted = Process::start_with(&database.url, stripe.url(), &env).await;
        smtp.wait_for(sessions.len()).await;
        // Settled: every receipt recorded, none left to attempt, so none can come again.
        drained(&connect(&database.url).await).await;

        let mail = smtp.accepted();
        let ids: HashSet<_> = mail.iter().map(|m| m.message_id()).collect();
        let missing = sessions
            .iter()
            .filter(|s| !ids.contains(&format!("<{s}.receipt@localhost>")))
            .count();
        assert_eq!(missing, 0, "sessions without a receipt on {backend:?}");
        assert_eq!(
            mail.len() - ids.len(),
            0,
            "duplicate receipts on {backend:?} ({before} accepted before the kill)"
        );
    }
}

#[actix_web::test]
async fn two_processes_drain_one_outbox_without_doing_an_effect_twice() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[]);
        let env = [
            ("SMTP_URL", smtp.url()),
            ("SHIPPING_WEBHOOK_URL", warehouse.url().to_owned()),
        ];
        let first = Process::start_with(&database.url, stripe.url(), &env).await;
        let second = Process::start_with(&database.url, stripe.url(), &env).await;
        let sessions: Vec<String> = (0..40).map(|_| stripe.add_session(order())).collect();

        deliver_to_all(&stripe, &sessions, &[&first, &second]).await;
        let mail = smtp.wait_for(sessions.len()).await;
        let shipments = warehouse.wait_for(sessions.len()).await;
        drained(&connect(&database.url).await).await;

        let mail_ids: HashSet<_> = mail.iter().map(|m| m.message_id()).collect();
        assert_eq!(mail_ids.len(), sessions.len(), "{backend:?}");
        assert_eq!(
            smtp.accepted().len(),
            sessions.len(),
            "duplicate receipts on {backend:?}"
        );
        let keys: HashSet<_> = shipments
            .iter()
            .map(|r| r.idempotency_key.clone())
            .collect();
        assert_eq!(keys.len(), sessions.len(), "{backend:?}");
        assert_eq!(
            warehouse.requests().len(),
            sessions.len(),
            "duplicate shipments on {backend:?}"
        );
        let db = Database::connect(&DatabaseUrl::parse(&database.url).expect("url"))
            .await
            .expect("db");
        // 25 in stock, two per order: oversold, and flagged.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stock = db.stock("TEE-M").await.expect("db");
            if stock == Some((25 - 2 * 40, true)) {
                break;
            }
            assert!(Instant::now() < deadline, "stock {stock:?} on {backend:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn connect(url: &str) -> Database {
    Database::connect(&DatabaseUrl::parse(url).expect("url"))
        .await
        .expect("database answers")
}
