//! A refunded order's shipment that the warehouse may have had: never sent again, asked
//! back once, and a warehouse that never had it lets the stock go back.

use std::time::{Duration, Instant};

use fulfilld::domain::{EffectKind, EffectStatus, SessionId, ShipmentStatus, Status};
use fulfilld::sandbox::{RefundSpec, SessionSpec};

use crate::helpers::{Backend, TestApp, backends, sign, spawn_app_with, unix_now, wait_for_event};
use crate::refunds::{settled_effects, wait_for_refunded};
use crate::warehouse::Warehouse;

/// Waits until the session's shipment effect has had an attempt that failed and is
/// waiting for its next one.
async fn wait_for_failed_shipment(app: &TestApp, session: &str) {
    let id = SessionId::parse(session).expect("id");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let effects = app.db.list_effects_of(&id).await.expect("db");
        let failed = effects.iter().any(|effect| {
            effect.kind == EffectKind::Shipment
                && effect.status == EffectStatus::Pending
                && effect.attempts == 1
                && effect.lease_until.is_none()
                && effect.last_error.is_some()
        });
        if failed {
            return;
        }
        assert!(Instant::now() < deadline, "{effects:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An app whose warehouse is `warehouse`, with retries a minute apart, and a session of two
/// mugs fulfilled whose shipment request failed once (the warehouse's first answer); with
/// the mugs' stock before it.
async fn two_mugs_tried_once(backend: &Backend, warehouse: &Warehouse) -> (TestApp, String, i64) {
    let app = spawn_app_with(backend, |settings| {
        settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        settings.effects.effect_backoff_ms = 60_000;
    })
    .await;
    let stock = app.db.stock("MUG").await.expect("db").expect("stocked").0;
    let session = app.stripe.add_session(
        SessionSpec::paid(&[("Mug", 1200, 2)])
            .with_prices(&["price_mug"])
            .with_shipping("Ada Lovelace", "1 Analytical Way", "London", "N1 1AA", "GB"),
    );
    app.deliver("evt_mugs", "checkout.session.completed", &session)
        .await;
    app.wait_for(&session, Status::Fulfilled).await;
    wait_for_failed_shipment(&app, &session).await;
    (app, session, stock)
}

#[actix_web::test]
async fn a_refunded_orders_shipment_tried_once_is_never_sent_again_and_asked_back_once() {
    for backend in backends() {
        // The first request times out at the warehouse's end (503); its retry is a minute
        // away. The cancellation finds no such shipment (404).
        let warehouse = Warehouse::start(&[503, 404]);
        let (app, session, stock) = two_mugs_tried_once(&backend, &warehouse).await;

        let refund = RefundSpec {
            id: "re_mugs",
            session: &session,
            amount: 2400,
            status: "succeeded",
            items: None,
        };
        let news = app
            .stripe
            .refund_payload("evt_re_mugs", "refund.created", &refund, unix_now());
        for _ in 0..2 {
            let answer = app.post_webhook(news.clone(), Some(sign(&news))).await;
            assert_eq!(answer.status(), 200);
        }
        assert_eq!(
            wait_for_refunded(&app, &session, 2400).await,
            Status::Refunded
        );
        let effects = settled_effects(&app, &session).await;
        for settled in [("shipment", "cancelled"), ("shipment_cancel", "done")] {
            let settled = (settled.0.to_owned(), settled.1.to_owned());
            assert!(effects.contains(&settled), "{effects:?} on {backend:?}");
        }
        let requests = warehouse.requests();
        let kinds: Vec<_> = requests.iter().map(|r| r.body["type"].clone()).collect();
        assert_eq!(
            kinds,
            ["shipment.requested", "shipment.cancel_requested"],
            "on {backend:?}"
        );
        let shipment = app.outcome(&session).await.expect("recorded").shipment;
        assert_eq!(
            shipment.expect("a shipment").status,
            ShipmentStatus::Cancelled
        );
        let after = app.db.stock("MUG").await.expect("db").expect("stocked").0;
        assert_eq!(after, stock, "the mugs are back, once, on {backend:?}");
    }
}

/// News of a refund told again, as another event (`refund.updated` after
/// `refund.created`), once the warehouse was asked back: the shipment and its stock stay
/// the cancellation's, and the stock comes back only when the warehouse agrees.
#[actix_web::test]
async fn a_refund_told_again_after_the_warehouse_was_asked_back_leaves_the_stock_to_its_answer() {
    for backend in backends() {
        // The request times out at the warehouse's end (503), and so does the first
        // cancellation; the next one is agreed to.
        let warehouse = Warehouse::start(&[503, 503, 200]);
        let (app, session, stock) = two_mugs_tried_once(&backend, &warehouse).await;

        let refund = RefundSpec {
            id: "re_mugs",
            session: &session,
            amount: 2400,
            status: "succeeded",
            items: None,
        };
        let created =
            app.stripe
                .refund_payload("evt_re_created", "refund.created", &refund, unix_now());
        let answer = app
            .post_webhook(created.clone(), Some(sign(&created)))
            .await;
        assert_eq!(answer.status(), 200);
        wait_for_refunded(&app, &session, 2400).await;
        // The first cancellation failed and waits a minute for its retry.
        let deadline = Instant::now() + Duration::from_secs(30);
        while warehouse.requests().len() < 2 {
            assert!(Instant::now() < deadline, "{:?}", warehouse.requests());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        let updated =
            app.stripe
                .refund_payload("evt_re_updated", "refund.updated", &refund, unix_now() + 1);
        let answer = app
            .post_webhook(updated.clone(), Some(sign(&updated)))
            .await;
        assert_eq!(answer.status(), 200);
        wait_for_event(&app.db, "evt_re_updated", |event| {
            event.processed_at.is_some()
        })
        .await;
        let shipment = app.outcome(&session).await.expect("recorded").shipment;
        assert_ne!(
            shipment.expect("a shipment").status,
            ShipmentStatus::Cancelled,
            "cancelled before the warehouse agreed, on {backend:?}"
        );
        let before_answer = app.db.stock("MUG").await.expect("db").expect("stocked").0;
        assert_eq!(
            before_answer,
            stock - 2,
            "stock back before the warehouse agreed"
        );

        app.execute("UPDATE effects SET next_attempt_at = 0 WHERE kind = 'shipment_cancel'")
            .await;
        let effects = settled_effects(&app, &session).await;
        let done = ("shipment_cancel".to_owned(), "done".to_owned());
        assert!(effects.contains(&done), "{effects:?} on {backend:?}");
        let kinds: Vec<_> = warehouse
            .requests()
            .iter()
            .map(|r| r.body["type"].clone())
            .collect();
        assert_eq!(
            kinds,
            [
                "shipment.requested",
                "shipment.cancel_requested",
                "shipment.cancel_requested"
            ],
            "on {backend:?}"
        );
        let shipment = app.outcome(&session).await.expect("recorded").shipment;
        assert_eq!(
            shipment.expect("a shipment").status,
            ShipmentStatus::Cancelled
        );
        let after = app.db.stock("MUG").await.expect("db").expect("stocked").0;
        assert_eq!(after, stock, "the mugs are back, once, on {backend:?}");
    }
}
