//! Disputes: an open one suspends access and holds a shipment not sent yet, a won one
//! gives both back, a lost one is a full refund. Each is told once to the merchant's
//! systems, signed, however often and in whatever order Stripe tells of it.

use std::time::{Duration, Instant};

use fulfilld::domain::{GrantStatus, ShipmentStatus, Status};
use fulfilld::sandbox::SessionSpec;
use serde_json::Value;

use crate::helpers::{TestApp, backends, spawn_app_with, unix_now};
use crate::refunds::{deliver_many, mails, settled_effects};
use crate::smtp::SmtpServer;
use crate::warehouse::Warehouse;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An e-book and a T-shirt, shipped to Ada.
pub(crate) fn ebook_and_tee() -> SessionSpec {
    SessionSpec::paid(&[("E-book", 900, 1), ("T-shirt", 2500, 1)])
        .with_prices(&["price_ebook", "price_tee_m"])
        .with_shipping("Ada Lovelace", "1 Analytical Way", "London", "N1 1AA", "GB")
}

/// The body of `charge.dispute.*` event `event_id` about dispute `dispute` of `session`.
fn dispute(app: &TestApp, event_id: &str, kind: &str, session: &str, status: &str) -> String {
    let dispute = format!("dp_{}", &session[session.len() - 12..]);
    app.stripe
        .dispute_payload(event_id, kind, session, &dispute, status, unix_now())
}

/// Waits until the session shows `status` and no effect of it is pending.
pub(crate) async fn settled(
    app: &TestApp,
    session: &str,
    status: Status,
) -> fulfilld::domain::Outcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = app.outcome(session).await;
        if outcome.as_ref().is_some_and(|o| o.status == status) {
            settled_effects(app, session).await;
            return app.outcome(session).await.expect("recorded");
        }
        assert!(
            Instant::now() < deadline,
            "{session} never {status:?} on {}: {outcome:?}, events {:?}",
            app.backend,
            app.db.list_events(false, 100).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `type`s of the notices the access system received, in order.
fn notice_types(access: &Warehouse) -> Vec<String> {
    access
        .requests()
        .iter()
        .map(|request| request.body["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[actix_web::test]
async fn a_dispute_suspends_and_holds_until_it_is_won_and_each_change_is_told_once_signed() {
    for backend in backends() {
        // The warehouse is down at first: the shipment is still waiting when the dispute
        // comes, and must not go while it is open.
        let warehouse = Warehouse::start(&[503]);
        let access = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
            settings.effects.access_webhook_url = Some(access.url().to_owned());
            settings.effects.outbound_webhook_secret = Some(SECRET.to_owned());
            settings.effects.effect_backoff_ms = 3_000;
        })
        .await;
        let session = app.stripe.add_session(ebook_and_tee());
        let paid = app
            .stripe
            .event_payload("evt_paid", "checkout.session.completed", &session);
        deliver_many(&app, &[paid], 1).await;
        app.wait_for(&session, Status::Fulfilled).await;
        warehouse.wait_for(1).await;

        let opened = dispute(
            &app,
            "evt_dp_open",
            "charge.dispute.created",
            &session,
            "needs_response",
        );
        deliver_many(&app, &[opened], 5).await;
        let outcome = settled(&app, &session, Status::Disputed).await;
        assert_eq!(
            outcome.access[0].status,
            GrantStatus::Suspended,
            "on {backend:?}"
        );
        assert_eq!(
            outcome.shipment.expect("a shipment").status,
            ShipmentStatus::Held
        );
        let json: Value = app
            .get(&format!("/api/checkout-sessions/{session}"))
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(json["status"], "disputed");
        assert_eq!(json["access"][0]["status"], "suspended");
        assert!(json["access"][0].get("url").is_none(), "{json}");
        // Past the warehouse's backoff: the held shipment did not go.
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(warehouse.requests().len(), 1, "on {backend:?}");

        // Won, told twice over and with the news that opened it arriving late again.
        let won = dispute(&app, "evt_dp_won", "charge.dispute.closed", &session, "won");
        let reinstated = dispute(
            &app,
            "evt_dp_funds",
            "charge.dispute.funds_reinstated",
            &session,
            "won",
        );
        deliver_many(&app, &[won, reinstated], 3).await;
        let stale = dispute(
            &app,
            "evt_dp_late",
            "charge.dispute.created",
            &session,
            "needs_response",
        );
        deliver_many(&app, &[stale], 2).await;
        let outcome = settled(&app, &session, Status::Fulfilled).await;
        assert_eq!(
            outcome.access[0].status,
            GrantStatus::Active,
            "on {backend:?}"
        );
        assert_eq!(
            outcome.shipment.expect("a shipment").status,
            ShipmentStatus::Submitted
        );

        let shipped = warehouse.requests();
        assert_eq!(shipped.len(), 2, "on {backend:?}: {shipped:?}");
        assert_eq!(shipped[1].status, 200);
        assert_eq!(shipped[1].body["type"], "shipment.requested");
        assert!(shipped.iter().all(|request| request.signed_with(SECRET)));
        assert_eq!(
            shipped[0].webhook[0], shipped[1].webhook[0],
            "the same webhook-id"
        );
        assert_eq!(
            notice_types(&access),
            ["access.granted", "access.suspended", "access.restored"],
            "on {backend:?}"
        );
        for notice in access.requests() {
            assert!(notice.signed_with(SECRET), "{notice:?}");
            assert!(!notice.signed_with("whsec_c2VjcmV0LW9mLWFub3RoZXItZW5kcG9pbnQ="));
            assert_eq!(notice.body["session_id"], session.as_str());
            assert_eq!(notice.body["items"][0]["sku"], "EBOOK-FULFILL");
            assert_eq!(notice.idempotency_key, notice.webhook[0]);
        }
    }
}

#[actix_web::test]
async fn a_lost_dispute_is_a_full_refund_and_the_warehouse_is_asked_to_cancel_once() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[]);
        let access = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.smtp_url = Some(smtp.url());
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
            settings.effects.access_webhook_url = Some(access.url().to_owned());
        })
        .await;
        let stock = app.db.stock("TEE-M").await.expect("db").expect("stocked").0;
        let session = app.stripe.add_session(ebook_and_tee());
        let paid = app
            .stripe
            .event_payload("evt_paid", "checkout.session.completed", &session);
        deliver_many(&app, &[paid], 1).await;
        let outcome = settled(&app, &session, Status::Fulfilled).await;
        assert_eq!(
            outcome.shipment.expect("a shipment").status,
            ShipmentStatus::Submitted
        );
        assert_eq!(
            app.db.stock("TEE-M").await.expect("db").expect("stocked").0,
            stock - 1
        );

        // Opened and lost, each told three times, all at once, in no particular order.
        let opened = dispute(
            &app,
            "evt_dp_open",
            "charge.dispute.created",
            &session,
            "needs_response",
        );
        let lost = dispute(
            &app,
            "evt_dp_lost",
            "charge.dispute.closed",
            &session,
            "lost",
        );
        deliver_many(&app, &[lost, opened], 3).await;
        let outcome = settled(&app, &session, Status::Refunded).await;
        assert_eq!(
            outcome.access[0].status,
            GrantStatus::Revoked,
            "on {backend:?}"
        );
        assert_eq!(
            outcome.shipment.expect("a shipment").status,
            ShipmentStatus::Cancelled
        );
        assert_eq!(
            app.db.stock("TEE-M").await.expect("db").expect("stocked").0,
            stock
        );

        let requests = warehouse.requests();
        let kinds: Vec<_> = requests.iter().map(|r| r.body["type"].clone()).collect();
        assert_eq!(
            kinds,
            ["shipment.requested", "shipment.cancel_requested"],
            "on {backend:?}"
        );
        assert_ne!(requests[0].idempotency_key, requests[1].idempotency_key);
        // No secret: sent unsigned, but still with a stable id.
        assert!(
            requests
                .iter()
                .all(|r| r.webhook[2].is_none() && r.webhook[0].is_some())
        );
        let notices = notice_types(&access);
        assert_eq!(notices.first().map(String::as_str), Some("access.granted"));
        assert_eq!(notices.last().map(String::as_str), Some("access.revoked"));
        assert_eq!(notices.iter().filter(|t| *t == "access.revoked").count(), 1);
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
    }
}

#[actix_web::test]
async fn a_dispute_told_before_the_payment_fulfils_the_session_then_holds_it() {
    for backend in backends() {
        let warehouse = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let session = app.stripe.add_session(ebook_and_tee());
        let opened = dispute(
            &app,
            "evt_dp_first",
            "charge.dispute.created",
            &session,
            "warning_needs_response",
        );
        deliver_many(&app, &[opened], 4).await;
        let outcome = settled(&app, &session, Status::Disputed).await;
        assert_eq!(outcome.access[0].status, GrantStatus::Suspended);
        // Then the session's own event, late: nothing changes, nothing ships.
        let paid = app
            .stripe
            .event_payload("evt_paid", "checkout.session.completed", &session);
        deliver_many(&app, &[paid], 2).await;
        app.drained().await;
        let outcome = settled(&app, &session, Status::Disputed).await;
        assert_eq!(
            outcome.shipment.expect("a shipment").status,
            ShipmentStatus::Held
        );
        assert!(warehouse.requests().is_empty(), "on {backend:?}");
    }
}

#[actix_web::test]
async fn a_shipment_waiting_for_an_operator_is_held_while_disputed_and_waits_again_once_won() {
    for backend in backends() {
        // No SHIPPING_WEBHOOK_URL: an operator ships by hand, and must see not to.
        let app = spawn_app_with(&backend, |_| {}).await;
        let session = app.stripe.add_session(ebook_and_tee());
        let paid = app
            .stripe
            .event_payload("evt_by_hand", "checkout.session.completed", &session);
        deliver_many(&app, &[paid], 1).await;
        let outcome = settled(&app, &session, Status::Fulfilled).await;
        let waiting = ShipmentStatus::AwaitingManualHandling;
        assert_eq!(outcome.shipment.expect("a shipment").status, waiting);

        let opened = dispute(
            &app,
            "evt_dp_hand",
            "charge.dispute.created",
            &session,
            "needs_response",
        );
        deliver_many(&app, &[opened], 2).await;
        let outcome = settled(&app, &session, Status::Disputed).await;
        let shipment = outcome.shipment.expect("a shipment").status;
        assert_eq!(shipment, ShipmentStatus::Held, "on {backend:?}");

        let won = dispute(&app, "evt_dp_won", "charge.dispute.closed", &session, "won");
        deliver_many(&app, &[won], 2).await;
        let outcome = settled(&app, &session, Status::Fulfilled).await;
        let shipment = outcome.shipment.expect("a shipment").status;
        assert_eq!(shipment, waiting, "on {backend:?}");
    }
}

#[actix_web::test]
async fn a_sessions_notices_arrive_in_the_order_of_their_changes_though_one_is_retried() {
    for backend in backends() {
        // The access system fails the suspension once; its retry is two seconds away, and
        // the restoration, made meanwhile, must not overtake it.
        let access = Warehouse::start(&[200, 503]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.access_webhook_url = Some(access.url().to_owned());
            settings.effects.effect_backoff_ms = 2_000;
        })
        .await;
        let session = app.stripe.add_session(ebook_and_tee());
        let paid = app
            .stripe
            .event_payload("evt_order", "checkout.session.completed", &session);
        deliver_many(&app, &[paid], 1).await;
        app.wait_for(&session, Status::Fulfilled).await;
        access.wait_for(1).await;
        let opened = dispute(
            &app,
            "evt_dp_order",
            "charge.dispute.created",
            &session,
            "needs_response",
        );
        deliver_many(&app, &[opened], 1).await;
        access.wait_for(2).await;
        let won = dispute(&app, "evt_dp_ok", "charge.dispute.closed", &session, "won");
        deliver_many(&app, &[won], 1).await;
        settled(&app, &session, Status::Fulfilled).await;

        let sent: Vec<(String, u16)> = access
            .requests()
            .iter()
            .map(|r| (r.body["type"].as_str().unwrap_or("?").to_owned(), r.status))
            .collect();
        let expected = [
            ("access.granted", 200),
            ("access.suspended", 503),
            ("access.suspended", 200),
            ("access.restored", 200),
        ]
        .map(|(kind, status)| (kind.to_owned(), status));
        assert_eq!(sent, expected, "on {backend:?}");
    }
}
