//! Customers first: a webhook backlog, paced by STRIPE_MAX_RPS, never makes a customer
//! wait for it.

use fulfilld::sandbox::SessionSpec;

use crate::helpers::{backends, paid_sessions, spawn_app_with};

#[actix_web::test]
async fn customers_see_their_order_ahead_of_a_paced_webhook_backlog() {
    for backend in backends() {
        // 4 calls a second: 80 acknowledged webhooks are a 20 s backlog, longer than the
        // landing page waits (8 s) before it says the order is still being confirmed.
        let app = spawn_app_with(&backend, |settings| {
            settings.stripe_max_rps = Some("4".into());
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
