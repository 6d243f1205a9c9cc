use fulfilld::domain::Status;
use fulfilld::sandbox::SessionSpec;
use fulfilld::stripe::signature::signature_header;

use crate::helpers::{
    WEBHOOK_SECRET, backends, sign, spawn_app, spawn_app_with, unix_now, wait_for_event,
};

#[actix_web::test]
async fn a_signed_paid_event_is_fulfilled_with_one_stripe_call() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app.stripe.add_session(SessionSpec::paid(&[
            ("T-shirt", 2500, 2),
            ("Sticker", 300, 1),
        ]));

        let response = app
            .deliver("evt_paid_1", "checkout.session.completed", &session)
            .await;

        assert_eq!(response.status(), 200, "{}", app.backend);
        let outcome = app.wait_for(&session, Status::Fulfilled).await;
        let described: Vec<_> = outcome
            .line_items
            .iter()
            .map(|i| (i.description.as_str(), i.quantity))
            .collect();
        assert_eq!(
            described,
            [("T-shirt", 2), ("Sticker", 1)],
            "{}",
            app.backend
        );
        assert_eq!(outcome.amount_total, Some(5300));
        assert_eq!(app.stripe.calls(&session), 1, "{}", app.backend);
        assert_eq!(app.effect_kinds(&session).await, ["receipt"]);
    }
}

#[actix_web::test]
async fn every_event_about_a_session_ends_processed_whether_it_recorded_it_or_found_it_recorded() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Mug", 1200, 1)]));

        // The first records the session, and its record marks it processed.
        let first = app
            .deliver("evt_records", "checkout.session.completed", &session)
            .await;
        assert_eq!(first.status(), 200, "{}", app.backend);
        app.wait_for(&session, Status::Fulfilled).await;
        // A second event about the session (another type, or a replay) finds it recorded:
        // its worker marks it.
        let second = app
            .deliver("evt_finds", "checkout.session.completed", &session)
            .await;
        assert_eq!(second.status(), 200, "{}", app.backend);

        for id in ["evt_records", "evt_finds"] {
            let event = wait_for_event(&app.db, id, |event| event.processed_at.is_some()).await;
            assert_eq!(event.dead_at, None, "{id} on {}", app.backend);
        }
        assert_eq!(app.stripe.calls(&session), 1, "{}", app.backend);
    }
}

#[actix_web::test]
async fn badly_signed_deliveries_are_refused_and_change_nothing() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Mug", 1200, 1)]));
        let body = app
            .stripe
            .event_payload("evt_bad", "checkout.session.completed", &session);
        let tampered = body.replace("\"paid\"", "\"PAID\"");
        let cases = [
            ("tampered body", tampered.clone(), Some(sign(&body))),
            (
                "wrong secret",
                body.clone(),
                Some(signature_header("whsec_other", unix_now(), body.as_bytes())),
            ),
            (
                "stale timestamp",
                body.clone(),
                Some(signature_header(
                    WEBHOOK_SECRET,
                    unix_now() - 301,
                    body.as_bytes(),
                )),
            ),
            ("missing header", body.clone(), None),
            ("garbage header", body.clone(), Some("t=abc,v1=zz".into())),
        ];

        for (case, body, signature) in cases {
            let response = app.post_webhook(body, signature).await;
            assert_eq!(response.status(), 400, "{case} on {}", app.backend);
        }

        assert_eq!(app.outcome(&session).await, None, "{}", app.backend);
        assert_eq!(
            app.db.event("evt_bad").await.expect("db").map(|e| e.id),
            None
        );
        assert_eq!(app.stripe.calls(&session), 0);
    }
}

#[actix_web::test]
async fn any_v1_under_any_configured_secret_is_accepted() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |settings| {
            settings.stripe_webhook_secret = Some(format!("whsec_retired, {WEBHOOK_SECRET}"));
        })
        .await;
        let first = app
            .stripe
            .add_session(SessionSpec::paid(&[("Mug", 1200, 1)]));
        let second = app
            .stripe
            .add_session(SessionSpec::paid(&[("Cap", 1500, 1)]));

        let body = app
            .stripe
            .event_payload("evt_rotated_1", "checkout.session.completed", &first);
        let old = signature_header("whsec_retired", unix_now(), body.as_bytes());
        assert_eq!(
            app.post_webhook(body, Some(old)).await.status(),
            200,
            "{}",
            app.backend
        );

        let body = app
            .stripe
            .event_payload("evt_rotated_2", "checkout.session.completed", &second);
        let valid = sign(&body);
        let valid_v1 = valid
            .split_once(",v1=")
            .map(|(_, v1)| v1.to_owned())
            .unwrap_or_default();
        let several = format!(
            "t={},v1={},v1={valid_v1},v0=ignored",
            unix_now(),
            "ab".repeat(32)
        );
        assert_eq!(
            app.post_webhook(body, Some(several)).await.status(),
            200,
            "{}",
            app.backend
        );

        app.wait_for(&first, Status::Fulfilled).await;
        app.wait_for(&second, Status::Fulfilled).await;
    }
}

#[actix_web::test]
async fn unreadable_bodies_get_400_other_event_types_200_and_huge_bodies_413() {
    for backend in backends() {
        let app = spawn_app(&backend).await;

        let garbage = "this is not json".to_owned();
        let response = app
            .post_webhook(garbage.clone(), Some(sign(&garbage)))
            .await;
        assert_eq!(response.status(), 400, "{}", app.backend);

        let other = r#"{"id":"evt_other","type":"charge.refunded","livemode":false,"data":{"object":{"id":"ch_1"}}}"#.to_owned();
        let response = app.post_webhook(other.clone(), Some(sign(&other))).await;
        assert_eq!(response.status(), 200, "{}", app.backend);
        assert_eq!(
            app.db.event("evt_other").await.expect("db").map(|e| e.id),
            None
        );

        let huge = format!(r#"{{"padding":"{}"}}"#, "x".repeat(300 * 1024));
        let response = app.post_webhook(huge.clone(), Some(sign(&huge))).await;
        assert_eq!(response.status(), 413, "{}", app.backend);
    }
}

#[actix_web::test]
async fn a_delayed_payment_awaits_then_is_fulfilled_when_it_clears() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let spec = SessionSpec::paid(&[("Desk", 30000, 1)]).with_payment_status("unpaid");
        let session = app.stripe.add_session(spec);

        let response = app
            .deliver("evt_unpaid", "checkout.session.completed", &session)
            .await;
        assert_eq!(response.status(), 200);
        let waiting = app.wait_for(&session, Status::AwaitingPayment).await;
        assert_eq!(waiting.line_items.len(), 1, "stored with the status");
        // The page refreshes itself while the payment clears; each view shows the cart.
        for _ in 0..3 {
            let page = app
                .get(&format!("/after-checkout?session_id={session}"))
                .await;
            assert_eq!(page.status(), 200);
            let html = page.text().await.expect("body");
            assert!(html.contains("Payment processing"), "{html}");
            assert!(html.contains(r#"http-equiv="refresh""#), "{html}");
            assert!(html.contains("Desk"), "the cart on every view: {html}");
        }
        assert_eq!(
            app.stripe.calls(&session),
            1,
            "the line items, once; the pages came from the database"
        );

        app.stripe.set_payment_status(&session, "paid");
        let response = app
            .deliver(
                "evt_cleared",
                "checkout.session.async_payment_succeeded",
                &session,
            )
            .await;
        assert_eq!(response.status(), 200);
        let outcome = app.wait_for(&session, Status::Fulfilled).await;
        assert_eq!(outcome.line_items.len(), 1, "{}", app.backend);
        assert_eq!(app.effect_kinds(&session).await, ["receipt"]);
        assert_eq!(
            app.stripe.calls(&session),
            1,
            "the stored cart was used again"
        );
    }
}

#[actix_web::test]
async fn a_failed_delayed_payment_is_recorded_and_not_undone_by_a_late_event() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let spec = SessionSpec::paid(&[("Desk", 30000, 1)]).with_payment_status("unpaid");
        let session = app.stripe.add_session(spec);

        let failed = app
            .deliver(
                "evt_failed",
                "checkout.session.async_payment_failed",
                &session,
            )
            .await;
        assert_eq!(failed.status(), 200);
        app.wait_for(&session, Status::PaymentFailed).await;
        // The `completed` event Stripe sent first arrives last.
        let late = app
            .deliver("evt_late", "checkout.session.completed", &session)
            .await;
        assert_eq!(late.status(), 200);
        let repeat = app
            .deliver(
                "evt_failed",
                "checkout.session.async_payment_failed",
                &session,
            )
            .await;
        assert_eq!(repeat.status(), 200);
        app.drained().await;

        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.status, Status::PaymentFailed, "{}", app.backend);
        assert_eq!(app.effect_kinds(&session).await, ["payment_failed_email"]);
        let html = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await
            .text()
            .await
            .expect("body");
        assert!(html.contains("Payment failed"), "{html}");
    }
}

#[actix_web::test]
async fn free_orders_are_fulfilled_and_expired_sessions_recorded() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let free = app.stripe.add_session(
            SessionSpec::paid(&[("Sample", 0, 1)]).with_payment_status("no_payment_required"),
        );
        let abandoned = app.stripe.add_session(
            SessionSpec::paid(&[("Sofa", 90000, 1)])
                .with_payment_status("unpaid")
                .with_status("expired"),
        );

        assert_eq!(
            app.deliver("evt_free", "checkout.session.completed", &free)
                .await
                .status(),
            200
        );
        assert_eq!(
            app.deliver("evt_expired", "checkout.session.expired", &abandoned)
                .await
                .status(),
            200
        );

        app.wait_for(&free, Status::Fulfilled).await;
        app.wait_for(&abandoned, Status::Expired).await;
        assert!(
            app.effect_kinds(&abandoned).await.is_empty(),
            "{}",
            app.backend
        );
    }
}

#[actix_web::test]
async fn stripe_failing_twice_then_answering_is_recovered_without_help() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Lamp", 4000, 1)]));
        app.stripe.fail_next(2, 500);

        let response = app
            .deliver("evt_flaky", "checkout.session.completed", &session)
            .await;

        assert_eq!(response.status(), 200);
        app.wait_for(&session, Status::Fulfilled).await;
        assert_eq!(app.stripe.calls(&session), 3, "{}", app.backend);
        // Marked processed just after the outcome is recorded.
        wait_for_event(&app.db, "evt_flaky", |e| e.state() == "processed").await;
    }
}

#[actix_web::test]
async fn rate_limited_calls_are_retried() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Lamp", 4000, 1)]));
        app.stripe.fail_next(1, 429);

        assert_eq!(
            app.deliver("evt_429", "checkout.session.completed", &session)
                .await
                .status(),
            200
        );

        app.wait_for(&session, Status::Fulfilled).await;
        assert_eq!(app.stripe.calls(&session), 2, "{}", app.backend);
    }
}
