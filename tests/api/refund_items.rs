//! A partial refund naming physical items gives their units back once per (refund, SKU):
//! kept from a shipment not requested yet, or asked back from a warehouse that has it.

use fulfilld::domain::{GrantStatus, ShipmentStatus, Status};
use fulfilld::sandbox::{RefundSpec, SessionSpec};
use serde_json::json;

use crate::helpers::{TestApp, backends, spawn_app_with, unix_now, wait_for_event};
use crate::refunds::{deliver_many, mails, settled_effects, wait_for_refunded};
use crate::smtp::SmtpServer;
use crate::warehouse::Warehouse;

/// Two T-shirts (2,500 each) and the e-book (900), shipped to Ada.
pub(crate) fn tees_and_ebook() -> SessionSpec {
    SessionSpec::paid(&[("T-shirt", 2500, 2), ("E-book", 900, 1)])
        .with_prices(&["price_tee_m", "price_ebook"])
        .with_shipping("Ada Lovelace", "1 Analytical Way", "London", "N1 1AA", "GB")
}

/// The refund of one T-shirt, told by `refund.created` three times at once and by
/// `refund.updated`, all together.
pub(crate) fn one_tee_refunded(app: &TestApp, session: &str) -> Vec<String> {
    let refund = RefundSpec {
        id: "re_tee",
        session,
        amount: 2500,
        status: "succeeded",
        items: Some("TEE-M:1"),
    };
    let now = unix_now();
    let created = app
        .stripe
        .refund_payload("evt_re_tee", "refund.created", &refund, now);
    let updated = app
        .stripe
        .refund_payload("evt_re_tee_u", "refund.updated", &refund, now + 1);
    vec![created.clone(), created.clone(), created, updated]
}

/// A session of [`tees_and_ebook`] delivered to `app` and fulfilled; with the T-shirts'
/// stock before it.
pub(crate) async fn tees_and_ebook_fulfilled(app: &TestApp) -> (String, i64) {
    let stock = tee_stock(app).await;
    let session = app.stripe.add_session(tees_and_ebook());
    app.deliver("evt_paid", "checkout.session.completed", &session)
        .await;
    app.wait_for(&session, Status::Fulfilled).await;
    (session, stock)
}

pub(crate) async fn tee_stock(app: &TestApp) -> i64 {
    app.db.stock("TEE-M").await.expect("db").expect("stocked").0
}

/// The session's refund email effects, with their status.
async fn refund_emails(app: &TestApp, session: &str) -> Vec<String> {
    let effects = settled_effects(app, session).await;
    effects
        .into_iter()
        .filter(|(kind, _)| kind == "refund_email")
        .map(|(_, status)| status)
        .collect()
}

#[actix_web::test]
async fn a_refund_of_one_unit_before_the_shipment_was_requested_keeps_it_from_the_shipment_once() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.smtp_url = Some(smtp.url());
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let stock = tee_stock(&app).await;
        let session = app
            .stripe
            .add_session(tees_and_ebook().with_payment_status("unpaid"));
        app.deliver("evt_pending", "checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::AwaitingPayment).await;

        // The refund is told before the payment clears: it waits, and applies with the
        // fulfilment, in its transaction, before any shipment request is made.
        let news = one_tee_refunded(&app, &session);
        deliver_many(&app, &news, 1).await;
        for event in ["evt_re_tee", "evt_re_tee_u"] {
            wait_for_event(&app.db, event, |event| event.last_error.is_some()).await;
        }
        app.stripe.set_payment_status(&session, "paid");
        app.deliver(
            "evt_cleared",
            "checkout.session.async_payment_succeeded",
            &session,
        )
        .await;
        assert_eq!(
            wait_for_refunded(&app, &session, 2500).await,
            Status::PartiallyRefunded,
            "on {backend:?}"
        );
        settled_effects(&app, &session).await;
        // Told again once applied, every form at once: nothing more happens.
        deliver_many(&app, &news, 1).await;
        app.drained().await;

        assert_eq!(tee_stock(&app).await, stock - 1, "on {backend:?}");
        let requests = warehouse.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!(requests[0].body["type"], "shipment.requested");
        let items = &requests[0].body["items"];
        assert_eq!(
            items,
            &json!([{ "sku": "TEE-M", "name": "T-shirt, medium", "quantity": 1 }]),
            "on {backend:?}"
        );
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.access.len(), 1);
        assert_eq!(outcome.access[0].status, GrantStatus::Active);
        let shipment = outcome.shipment.expect("a shipment");
        assert_eq!(shipment.status, ShipmentStatus::Submitted);
        assert_eq!(
            refund_emails(&app, &session).await,
            ["done"],
            "on {backend:?}"
        );
        assert_eq!(mails(&smtp, &session, "refund_email.re_tee"), 1);
        assert_eq!(mails(&smtp, &session, "refund_email"), 0);

        // The rest is refunded: the warehouse is asked back the shipment, and its yes puts
        // back only the T-shirt that left with it; the full refund mails its own email.
        let rest = RefundSpec {
            id: "re_rest",
            session: &session,
            amount: 3400,
            status: "succeeded",
            items: None,
        };
        let told = app
            .stripe
            .refund_payload("evt_re_rest", "refund.created", &rest, unix_now());
        deliver_many(&app, &[told], 1).await;
        assert_eq!(
            wait_for_refunded(&app, &session, 5900).await,
            Status::Refunded
        );
        settled_effects(&app, &session).await;
        app.drained().await;
        let kinds: Vec<_> = warehouse
            .requests()
            .iter()
            .map(|r| r.body["type"].clone())
            .collect();
        assert_eq!(kinds, ["shipment.requested", "shipment.cancel_requested"]);
        assert_eq!(tee_stock(&app).await, stock, "on {backend:?}");
        assert_eq!(refund_emails(&app, &session).await, ["done", "done"]);
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
    }
}

#[actix_web::test]
async fn a_refund_of_one_unit_the_warehouse_accepted_asks_it_back_once_and_restocks_at_its_yes() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        // The shipment is accepted; the first cancellation attempt meets a 503.
        let warehouse = Warehouse::start(&[200, 503]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.smtp_url = Some(smtp.url());
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
            settings.effects.effect_backoff_ms = 2_000;
        })
        .await;
        let (session, stock) = tees_and_ebook_fulfilled(&app).await;
        settled_effects(&app, &session).await;
        assert_eq!(warehouse.requests().len(), 1);
        assert_eq!(tee_stock(&app).await, stock - 2);

        let news = one_tee_refunded(&app, &session);
        deliver_many(&app, &news, 1).await;
        assert_eq!(
            wait_for_refunded(&app, &session, 2500).await,
            Status::PartiallyRefunded
        );
        let requests = warehouse.wait_for(2).await;
        assert_eq!(requests[1].status, 503);
        assert_eq!(
            tee_stock(&app).await,
            stock - 2,
            "no stock back before the warehouse agrees, on {backend:?}"
        );
        let requests = warehouse.wait_for(3).await;
        settled_effects(&app, &session).await;
        deliver_many(&app, &news, 1).await;
        app.drained().await;

        let requests_now = warehouse.requests();
        assert_eq!(requests_now.len(), 3, "{requests_now:?}");
        let key = format!("fulfilld-shipment-cancel-{session}-re_tee");
        for cancel in &requests[1..] {
            assert_eq!(cancel.body["type"], "shipment.cancel_requested");
            assert_eq!(cancel.idempotency_key.as_deref(), Some(key.as_str()));
            assert_eq!(
                cancel.body["items"],
                json!([{ "sku": "TEE-M", "name": "T-shirt, medium", "quantity": 1 }]),
                "on {backend:?}"
            );
        }
        assert_eq!(requests[2].status, 200);
        assert_eq!(tee_stock(&app).await, stock - 1, "on {backend:?}");
        let effects = settled_effects(&app, &session).await;
        assert!(
            effects.contains(&("shipment_cancel".into(), "done".into())),
            "{effects:?}"
        );
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.access[0].status, GrantStatus::Active);
        let shipment = outcome.shipment.expect("a shipment");
        assert_eq!(shipment.status, ShipmentStatus::Submitted);
        assert_eq!(
            refund_emails(&app, &session).await,
            ["done"],
            "on {backend:?}"
        );
        assert_eq!(mails(&smtp, &session, "refund_email.re_tee"), 1);
    }
}

#[actix_web::test]
async fn a_refund_of_every_unit_before_the_shipment_was_requested_cancels_it_and_keeps_the_ebook() {
    for backend in backends() {
        let warehouse = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let stock = tee_stock(&app).await;
        let spec = tees_and_ebook().with_payment_status("unpaid");
        let session = app.stripe.add_session(spec);
        app.deliver("evt_pending", "checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::AwaitingPayment).await;
        // Three T-shirts named of the two bought: two come back.
        let refund = RefundSpec {
            id: "re_tees",
            session: &session,
            amount: 5000,
            status: "succeeded",
            items: Some("TEE-M:3"),
        };
        let told = app
            .stripe
            .refund_payload("evt_re_tees", "refund.created", &refund, unix_now());
        deliver_many(&app, std::slice::from_ref(&told), 1).await;
        wait_for_event(&app.db, "evt_re_tees", |event| event.last_error.is_some()).await;
        app.stripe.set_payment_status(&session, "paid");
        app.deliver(
            "evt_cleared",
            "checkout.session.async_payment_succeeded",
            &session,
        )
        .await;
        assert_eq!(
            wait_for_refunded(&app, &session, 5000).await,
            Status::PartiallyRefunded
        );
        let effects = settled_effects(&app, &session).await;
        assert!(
            effects.contains(&("shipment".into(), "cancelled".into())),
            "{effects:?} on {backend:?}"
        );
        deliver_many(&app, &[told], 2).await;
        app.drained().await;
        assert!(warehouse.requests().is_empty(), "nothing shipped");
        assert_eq!(tee_stock(&app).await, stock, "on {backend:?}");
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.access[0].status, GrantStatus::Active);
        let shipment = outcome.shipment.expect("a shipment");
        assert_eq!(shipment.status, ShipmentStatus::Cancelled, "on {backend:?}");
    }
}
