//! Events have a life: an event that cannot be carried out is retried with backoff, or
//! kept dead with its reason, listed, and replayed by an operator.

use fulfilld::domain::Status;
use fulfilld::sandbox::{SessionSpec, StripeDouble};

use crate::faults::connect;
use crate::helpers::{Process, backends, post_webhook, sign, spawn_app, wait_for_event};

#[actix_web::test]
async fn a_paid_event_for_a_session_stripe_does_not_know_is_dead_listed_and_replayable() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Print", 1500, 1)]));
        let body = app
            .stripe
            .event_payload("evt_missing", "checkout.session.completed", &session);
        // Signed by Stripe, yet unknown to this key: a connected account's session, say.
        let spec = app.stripe.remove_session(&session).expect("known");

        let response = app.post_webhook(body.clone(), Some(sign(&body))).await;
        assert_eq!(response.status(), 200);
        let dead = wait_for_event(&app.db, "evt_missing", |e| e.state() == "dead").await;
        assert!(
            dead.last_error
                .as_deref()
                .is_some_and(|error| error.contains("resource_missing")),
            "{dead:?}"
        );
        assert_eq!(dead.processed_at, None);
        assert_eq!(app.outcome(&session).await, None);
        let listed = app.cli(&["events", "list", "--dead"]).await;
        assert!(listed.contains("evt_missing"), "{listed}");
        assert!(listed.contains("resource_missing"), "{listed}");
        let shown = app.cli(&["sessions", "show", &session]).await;
        assert!(shown.contains("event evt_missing"), "{shown}");

        // The operator fixes what was wrong; the replay fulfils the order.
        app.stripe.insert_session(&session, spec);
        let replayed = app.cli(&["events", "replay", "evt_missing"]).await;
        assert!(replayed.contains("was dead"), "{replayed}");
        assert!(replayed.contains("fulfilled"), "{replayed}");
        app.wait_for(&session, Status::Fulfilled).await;
        let done = wait_for_event(&app.db, "evt_missing", |e| e.state() == "processed").await;
        assert_eq!(done.dead_at, None);
    }
}

#[actix_web::test]
async fn a_404_that_is_not_stripes_answer_is_retried_not_taken_for_an_unknown_session() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        // A mistyped STRIPE_API_BASE: every call is a 404 from something that is not Stripe.
        let wrong = [("STRIPE_API_BASE", format!("{}/not-stripe", stripe.url()))];
        let process = Process::start_with(&database.url, stripe.url(), &wrong).await;
        let session = stripe.add_session(SessionSpec::paid(&[("Poster", 800, 1)]));
        let body = stripe.event_payload("evt_proxy", "checkout.session.completed", &session);
        let signature = sign(&body);
        let client = reqwest::Client::new();
        let response = post_webhook(&client, &process.address, body, Some(signature)).await;
        assert_eq!(response.status(), 200);
        let db = connect(&database.url).await;

        let failed = wait_for_event(&db, "evt_proxy", |e| e.attempts >= 1).await;
        assert_eq!(failed.state(), "waiting", "{failed:?}");
        assert!(failed.next_attempt_at > failed.received_at, "{failed:?}");
        process.kill_9();

        // Once the setting is fixed, the restart carries the event out.
        let _fixed = Process::start(&database.url, stripe.url()).await;
        crate::helpers::wait_for_status(&db, &session, Status::Fulfilled).await;
        wait_for_event(&db, "evt_proxy", |e| e.state() == "processed").await;
    }
}

#[actix_web::test]
async fn a_signed_expiry_is_recorded_just_after_a_lookup_found_the_session_unknown() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app.stripe.add_session(
            SessionSpec::paid(&[("Kite", 2000, 1)])
                .with_status("expired")
                .with_payment_status("unpaid"),
        );
        let body = app
            .stripe
            .event_payload("evt_gone", "checkout.session.expired", &session);
        app.stripe.remove_session(&session);
        let page = app.get(&format!("/api/checkout-sessions/{session}")).await;
        assert_eq!(page.status(), 404, "{}", app.backend);

        // The session's actor still remembers Stripe's answer; the signed event needs no
        // call and is recorded.
        let signature = sign(&body);
        let ack = app.post_webhook(body, Some(signature)).await;
        assert_eq!(ack.status(), 200);
        app.wait_for(&session, Status::Expired).await;
    }
}
