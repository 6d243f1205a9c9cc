//! Customers first: a webhook backlog, paced by STRIPE_MAX_RPS, never makes a customer
//! wait for it.

use std::time::{Duration, Instant};

use fulfilld::sandbox::SessionSpec;

use crate::helpers::{backends, paid_sessions, spawn_app_with};

#[actix_web::test]
async fn customers_see_their_order_ahead_of_a_paced_webhook_backlog() {
    for backend in backends() {
        // 4 calls a second: 80 acknowledged webhooks are a 20 s backlog, longer than the
        // landing page waits (8 s) before it says the order is still being confirmed.
        let app = spawn_app_with(&backend, |settings| {
            settings.stripe_max_rps = Some(4);
        })
        .await;
        let sessions = paid_sessions(&app.stripe, "Sticker", 100, 80);
        let acks = app.deliver_completed(&sessions).await;
        assert!(acks.iter().all(|status| *status == 200));
        // Another customer, whose webhook has not arrived.
        let early = app
            .stripe
            .add_session(SessionSpec::paid(&[("Badge", 700, 1)]));

        for customer in [sessions.last().expect("sessions"), &early] {
            let page = app
                .get(&format!("/after-checkout?session_id={customer}"))
                .await;
            assert_eq!(page.status(), 200, "{customer} on {}", app.backend);
            let html = page.text().await.expect("body");
            assert!(html.contains("Thank you for your order"), "{html}");
        }
        let drained = app.count_fulfilled(&sessions).await;
        assert!(
            drained < sessions.len() - 10,
            "served ahead of the backlog, not after it: {drained} already drained"
        );
    }
}

#[actix_web::test]
async fn a_burst_beyond_the_workers_queue_is_acknowledged_and_drains_from_the_inbox() {
    for backend in backends() {
        // One worker and a queue of 16: most of the burst waits in the database only.
        let app = spawn_app_with(&backend, |settings| {
            settings.webhook_workers = 1;
        })
        .await;
        let sessions = paid_sessions(&app.stripe, "Pin", 300, 150);
        let started = Instant::now();
        let acks = app.deliver_completed(&sessions).await;
        assert!(acks.iter().all(|status| *status == 200), "{acks:?}");

        // Well before the periodic replay (30 s): the inbox is drained as soon as the
        // queue has room.
        let deadline = started + Duration::from_secs(20);
        while app.count_fulfilled(&sessions).await < sessions.len() {
            assert!(
                Instant::now() < deadline,
                "{} of {} fulfilled after {:?} on {}",
                app.count_fulfilled(&sessions).await,
                sessions.len(),
                started.elapsed(),
                app.backend
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for session in &sessions {
            assert_eq!(app.stripe.calls(session), 1, "{session} on {}", app.backend);
        }
    }
}
