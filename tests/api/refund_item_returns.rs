//! Units a partial refund gave back by item, where the warehouse or the stock movement
//! was not where the refund found them: a cancellation refused, a shipment awaiting an
//! operator or revived by one, stock not taken yet.

use fulfilld::domain::{EffectKind, SessionId, ShipmentStatus, Status};
use fulfilld::sandbox::RefundSpec;
use serde_json::json;

use crate::helpers::{TestApp, backends, execute_on, spawn_app_with, unix_now, wait_for_event};
use crate::refund_items::{one_tee_refunded, tee_stock, tees_and_ebook_fulfilled};
use crate::refunds::{deliver_many, settled_effects, wait_for_refunded};
use crate::warehouse::Warehouse;

#[actix_web::test]
async fn a_full_refund_puts_back_units_whose_cancellation_the_warehouse_refused() {
    for backend in backends() {
        // The shipment is accepted; the cancellation of one unit is refused (422), the
        // cancellation of the whole shipment accepted.
        let warehouse = Warehouse::start(&[200, 422, 200]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let (session, stock) = tees_and_ebook_fulfilled(&app).await;
        settled_effects(&app, &session).await;
        assert_eq!(tee_stock(&app).await, stock - 2);

        deliver_many(&app, &one_tee_refunded(&app, &session), 1).await;
        wait_for_refunded(&app, &session, 2500).await;
        let requests = warehouse.wait_for(2).await;
        assert_eq!(requests[1].status, 422);
        settled_effects(&app, &session).await;
        assert_eq!(tee_stock(&app).await, stock - 2, "on {backend:?}");

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
        wait_for_refunded(&app, &session, 5900).await;
        let requests = warehouse.wait_for(3).await;
        assert_eq!(requests[2].status, 200);
        settled_effects(&app, &session).await;
        app.drained().await;
        assert_eq!(
            tee_stock(&app).await,
            stock,
            "both T-shirts back, on {backend:?}"
        );
    }
}

#[actix_web::test]
async fn a_shipment_awaiting_an_operator_shows_only_what_is_left_to_ship_after_a_refund_of_a_unit()
{
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let (session, stock) = tees_and_ebook_fulfilled(&app).await;
        settled_effects(&app, &session).await;
        let shipment = app.outcome(&session).await.and_then(|o| o.shipment);
        assert_eq!(
            shipment.map(|s| s.status),
            Some(ShipmentStatus::AwaitingManualHandling)
        );

        deliver_many(&app, &one_tee_refunded(&app, &session), 1).await;
        wait_for_refunded(&app, &session, 2500).await;
        settled_effects(&app, &session).await;
        assert_eq!(tee_stock(&app).await, stock - 1, "on {backend:?}");

        let response = app.get(&format!("/api/checkout-sessions/{session}")).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(
            body["shipment"]["items"],
            json!([{ "sku": "TEE-M", "name": "T-shirt, medium", "quantity": 1 }]),
            "on {backend:?}"
        );
    }
}

#[actix_web::test]
async fn a_refund_of_a_unit_of_a_revived_shipment_whose_attempt_failed_asks_the_warehouse_for_it() {
    for backend in backends() {
        // The shipment request is refused (422): it dies, its error kept.
        let warehouse = Warehouse::start(&[422]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let (session, stock) = tees_and_ebook_fulfilled(&app).await;
        let effects = settled_effects(&app, &session).await;
        assert!(
            effects.contains(&("shipment".into(), "dead".into())),
            "{effects:?}"
        );
        // An operator revives it, a fresh count of attempts; its next attempt is not made
        // yet when the refund comes.
        let far = (unix_now() + 3_600) * 1_000;
        execute_on(
            app.database_url(),
            &format!(
                "UPDATE effects SET status = 'pending', attempts = 0, next_attempt_at = {far} \
                 WHERE session_id = '{session}' AND kind = 'shipment'"
            ),
        )
        .await;
        execute_on(
            app.database_url(),
            &format!("UPDATE shipments SET status = 'pending' WHERE session_id = '{session}'"),
        )
        .await;

        deliver_many(&app, &one_tee_refunded(&app, &session), 1).await;
        wait_for_refunded(&app, &session, 2500).await;
        for event in ["evt_re_tee", "evt_re_tee_u"] {
            wait_for_event(&app.db, event, |event| event.processed_at.is_some()).await;
        }
        assert_eq!(
            tee_stock(&app).await,
            stock - 2,
            "no stock back before the warehouse agrees, on {backend:?}"
        );
        let kinds = app.effect_kinds(&session).await;
        assert!(
            kinds.contains(&"shipment_cancel".to_owned()),
            "{kinds:?} on {backend:?}"
        );
    }
}

#[actix_web::test]
async fn the_warehouse_cancelling_a_unit_before_the_stock_was_taken_leaves_the_stock_as_it_was() {
    for backend in backends() {
        let warehouse = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let (session, stock) = tees_and_ebook_fulfilled(&app).await;
        settled_effects(&app, &session).await;
        // The shipment was accepted before the session's stock was taken: its movement
        // waits, its attempt an hour away.
        let far = (unix_now() + 3_600) * 1_000;
        for statement in [
            format!("UPDATE stock_movements SET applied_at = NULL WHERE session_id = '{session}'"),
            "UPDATE inventory SET stock = stock + 2 WHERE sku = 'TEE-M'".to_owned(),
            format!(
                "UPDATE effects SET status = 'pending', next_attempt_at = {far} \
                 WHERE session_id = '{session}' AND kind = 'inventory'"
            ),
        ] {
            execute_on(app.database_url(), &statement).await;
        }
        assert_eq!(tee_stock(&app).await, stock);

        // The warehouse cancels one T-shirt: its stock was never taken, so none goes back.
        deliver_many(&app, &one_tee_refunded(&app, &session), 1).await;
        wait_for_refunded(&app, &session, 2500).await;
        let requests = warehouse.wait_for(2).await;
        assert_eq!(requests[1].body["type"], "shipment.cancel_requested");
        wait_for_done_cancel(&app, &session).await;
        assert_eq!(tee_stock(&app).await, stock, "on {backend:?}");

        // The rest is refunded: the stock movement is never made, and the stock stays.
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
        wait_for_refunded(&app, &session, 5900).await;
        settled_effects(&app, &session).await;
        app.drained().await;
        assert_eq!(tee_stock(&app).await, stock, "on {backend:?}");
    }
}

/// Waits until the cancellation of a refund's units is done.
async fn wait_for_done_cancel(app: &TestApp, session: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let effects = app.effects(session).await;
        if effects.contains(&("shipment_cancel".into(), "done".into())) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{effects:?}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[actix_web::test]
async fn a_revived_shipment_is_requested_without_the_units_a_refund_got_back() {
    for backend in backends() {
        // The shipment request times out at the warehouse's end (503) and dies; the
        // cancellation of one T-shirt finds no such shipment (404); the revived request
        // is accepted.
        let warehouse = Warehouse::start(&[503, 404, 200]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
            settings.effects.effect_max_attempts = 1;
        })
        .await;
        let (session, stock) = tees_and_ebook_fulfilled(&app).await;
        let effects = settled_effects(&app, &session).await;
        assert!(
            effects.contains(&("shipment".into(), "dead".into())),
            "{effects:?}"
        );

        deliver_many(&app, &one_tee_refunded(&app, &session), 1).await;
        wait_for_refunded(&app, &session, 2500).await;
        let requests = warehouse.wait_for(2).await;
        assert_eq!(requests[1].status, 404);
        wait_for_done_cancel(&app, &session).await;
        assert_eq!(tee_stock(&app).await, stock - 1, "on {backend:?}");

        let id = SessionId::parse(&session).expect("id");
        let effects = app.db.list_effects_of(&id).await.expect("db");
        let shipment = effects
            .iter()
            .find(|effect| effect.kind == EffectKind::Shipment)
            .expect("the shipment's effect");
        assert!(app.db.revive_effect(shipment.id).await.expect("db"));
        let requests = warehouse.wait_for(3).await;
        assert_eq!(requests[2].body["type"], "shipment.requested");
        assert_eq!(
            requests[2].body["items"],
            json!([{ "sku": "TEE-M", "name": "T-shirt, medium", "quantity": 1 }]),
            "on {backend:?}"
        );
        settled_effects(&app, &session).await;
        assert_eq!(tee_stock(&app).await, stock - 1, "on {backend:?}");
    }
}

/// A refund's units of a shipment held by an open dispute, whose request was tried once:
/// the warehouse is not asked for them while the request may yet go out, and once the
/// dispute is won and the request has gone, they are asked back and their stock returns
/// once.
#[actix_web::test]
async fn units_of_a_shipment_held_by_a_dispute_are_asked_back_only_once_its_request_went() {
    for backend in backends() {
        // The request meets a 503 (its retry a minute away), then is accepted once the
        // dispute is won; the cancellation is agreed to.
        let warehouse = Warehouse::start(&[503, 200, 200]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
            settings.effects.effect_backoff_ms = 60_000;
        })
        .await;
        let (session, stock) = tees_and_ebook_fulfilled(&app).await;
        warehouse.wait_for(1).await;
        let id = SessionId::parse(&session).expect("id");
        let dispute = |event: &str, kind: &str, status: &str| {
            app.stripe
                .dispute_payload(event, kind, &session, "dp_held", status, unix_now())
        };
        let opened = dispute("evt_dp_open", "charge.dispute.created", "needs_response");
        deliver_many(&app, &[opened], 1).await;
        app.wait_for(&session, Status::Disputed).await;

        deliver_many(&app, &one_tee_refunded(&app, &session), 1).await;
        // The cancellation was tried and put off, uncounted, while the request is held.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let effects = app.db.list_effects_of(&id).await.expect("db");
            let put_off = effects.iter().any(|effect| {
                effect.kind == EffectKind::ShipmentCancel
                    && effect.attempts == 0
                    && effect.next_attempt_at > fulfilld::db::now_ms() + 600_000
            });
            if put_off {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{effects:?} on {backend:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(
            warehouse.requests().len(),
            1,
            "asked while held, on {backend:?}"
        );
        assert_eq!(tee_stock(&app).await, stock - 2, "on {backend:?}");

        // Won: the request goes out; then the warehouse is asked for the refunded unit.
        let won = dispute("evt_dp_won", "charge.dispute.closed", "won");
        deliver_many(&app, &[won], 1).await;
        let requests = warehouse.wait_for(2).await;
        assert_eq!(requests[1].body["type"], "shipment.requested");
        app.execute("UPDATE effects SET next_attempt_at = 0 WHERE kind = 'shipment_cancel'")
            .await;
        let requests = warehouse.wait_for(3).await;
        assert_eq!(requests[2].body["type"], "shipment.cancel_requested");
        settled_effects(&app, &session).await;
        assert_eq!(tee_stock(&app).await, stock - 1, "on {backend:?}");
    }
}
