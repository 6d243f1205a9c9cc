use std::time::Duration;

use fulfilld::domain::Status;
use fulfilld::sandbox::SessionSpec;
use futures_util::future::join_all;

use crate::helpers::{backends, sign, spawn_app, spawn_app_with};

#[actix_web::test]
async fn a_storm_of_duplicate_deliveries_and_landings_fulfils_once() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app.stripe.add_session(SessionSpec::paid(&[
            ("Keyboard", 9900, 1),
            ("Cable", 900, 2),
        ]));
        // A slow Stripe keeps the first attempt in flight while the storm arrives.
        app.stripe.set_delay(Duration::from_millis(200));
        let body = app
            .stripe
            .event_payload("evt_storm", "checkout.session.completed", &session);

        let deliveries = (0..200).map(|_| {
            let (body, signature) = (body.clone(), sign(&body));
            async {
                app.post_webhook(body, Some(signature))
                    .await
                    .status()
                    .as_u16()
            }
        });
        let landings = (0..50).map(|_| async {
            app.get(&format!("/after-checkout?session_id={session}"))
                .await
                .status()
                .as_u16()
        });
        let (delivered, landed) = futures_util::join!(join_all(deliveries), join_all(landings));

        assert!(
            delivered.iter().all(|status| *status == 200),
            "{delivered:?} on {}",
            app.backend
        );
        assert!(
            landed.iter().all(|status| *status == 200),
            "{landed:?} on {}",
            app.backend
        );
        let outcome = app.wait_for(&session, Status::Fulfilled).await;
        assert_eq!(outcome.line_items.len(), 2, "{}", app.backend);
        assert_eq!(app.effect_kinds(&session).await, ["receipt"]);
        let calls = app.stripe.calls(&session);
        assert!(
            calls <= 2,
            "{calls} Stripe calls for one session on {}",
            app.backend
        );
    }
}

#[actix_web::test]
async fn idle_session_actors_stop_and_a_later_request_is_answered_from_the_database() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |settings| settings.session_idle_secs = 1).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Chair", 12000, 1)]));
        assert_eq!(
            app.get(&format!("/after-checkout?session_id={session}"))
                .await
                .status(),
            200
        );
        assert_eq!(app.sessions.live_actors().await, 1);

        // Idle past SESSION_IDLE_SECS, the actor stops by itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while app.sessions.live_actors().await > 0 {
            assert!(std::time::Instant::now() < deadline, "{}", app.backend);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let again = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await;
        assert_eq!(again.status(), 200);
        assert!(
            again
                .text()
                .await
                .expect("body")
                .contains("Thank you for your order")
        );
        assert_eq!(app.stripe.calls(&session), 1, "{}", app.backend);
    }
}
