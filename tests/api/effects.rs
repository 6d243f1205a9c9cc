//! Side effects: receipts and notices over real SMTP, stock, shipments to a real HTTP
//! endpoint, access grants; each exactly once, through outages.

use std::collections::HashSet;
use std::time::Duration;

use fulfilld::domain::{EffectStatus, SessionId, ShipmentStatus, Status};
use fulfilld::sandbox::SessionSpec;
use futures_util::future::join_all;

use crate::helpers::{TestApp, backends, sign, spawn_app_with};
use crate::smtp::SmtpServer;
use crate::warehouse::Warehouse;

/// A T-shirt (physical, two of them) and an e-book (digital), shipped to Jenny.
pub fn order() -> SessionSpec {
    SessionSpec::paid(&[("T-shirt", 2500, 2), ("E-book", 900, 1)])
        .with_prices(&["price_tee_m", "price_ebook"])
        .with_shipping("Jenny Rosen", "1 Main St", "Springfield", "97477", "US")
}

async fn spawn_shop(
    backend: &crate::helpers::Backend,
    smtp: &SmtpServer,
    warehouse: Option<&Warehouse>,
) -> TestApp {
    spawn_app_with(backend, |settings| {
        settings.effects.smtp_url = Some(smtp.url());
        settings.effects.shipping_webhook_url = warehouse.map(|w| w.url().to_owned());
    })
    .await
}

#[actix_web::test]
async fn a_storm_of_duplicates_sends_one_receipt_moves_stock_once_ships_once_and_grants_once() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[]);
        let app = spawn_shop(&backend, &smtp, Some(&warehouse)).await;
        let session = app.stripe.add_session(order());
        app.stripe.set_delay(Duration::from_millis(100));
        let body = app
            .stripe
            .event_payload("evt_storm", "checkout.session.completed", &session);

        let deliveries = (0..100).map(|_| {
            let (body, signature) = (body.clone(), sign(&body));
            async {
                app.post_webhook(body, Some(signature))
                    .await
                    .status()
                    .as_u16()
            }
        });
        let landings = (0..30).map(|_| async {
            app.get(&format!("/after-checkout?session_id={session}"))
                .await
                .status()
                .as_u16()
        });
        let (delivered, landed) = futures_util::join!(join_all(deliveries), join_all(landings));
        assert!(delivered.iter().chain(&landed).all(|status| *status == 200));
        app.wait_for(&session, Status::Fulfilled).await;
        let kinds = app.wait_for_effects(&session).await;
        assert_eq!(
            kinds,
            ["receipt", "inventory", "shipment"],
            "{}",
            app.backend
        );
        app.drained().await;

        let mail = smtp.accepted();
        assert_eq!(mail.len(), 1, "one receipt on {}", app.backend);
        let receipt = &mail[0];
        assert_eq!(receipt.to, ["customer@example.com"]);
        assert_eq!(
            receipt.message_id(),
            format!("<{session}.receipt@shop.test>")
        );
        assert_eq!(
            receipt.header("From").unwrap(),
            "\"Test Shop\" <shop@shop.test>"
        );
        // A test-mode order says so, so nobody mistakes it for a real one.
        assert_eq!(
            receipt.header("Subject").unwrap(),
            "[Test order] Your receipt from Test Shop"
        );
        let text = receipt.text();
        for expected in [
            "TEST ORDER: placed in Stripe's test mode",
            "2 x T-shirt",
            "$50.00",
            "$59.00",
            "1 Main St",
            "97477 Springfield",
            &format!("https://downloads.example.com/EBOOK-FULFILL?order={session}"),
            "Content-Type: text/html",
            "Content-Type: text/plain",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }

        let movements = app.db.stock_movements_of(&session).await.unwrap();
        assert_eq!(
            movements,
            [("TEE-M".to_owned(), 2, true)],
            "{}",
            app.backend
        );
        assert_eq!(app.db.stock("TEE-M").await.unwrap(), Some((23, false)));

        let requests = warehouse.requests();
        assert_eq!(requests.len(), 1, "one shipping request on {}", app.backend);
        let request = &requests[0];
        assert_eq!(
            request.idempotency_key.as_deref(),
            Some(format!("fulfilld-shipment-{session}").as_str())
        );
        assert_eq!(request.body["session_id"], session.as_str());
        assert_eq!(
            request.body["livemode"], false,
            "a test order, for the warehouse"
        );
        assert_eq!(request.body["items"][0]["sku"], "TEE-M");
        assert_eq!(request.body["items"][0]["quantity"], 2);
        assert_eq!(request.body["address"]["postal_code"], "97477");
        assert_eq!(request.body["items"].as_array().unwrap().len(), 1);

        let json: serde_json::Value = app
            .get(&format!("/api/checkout-sessions/{session}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(json["access"].as_array().unwrap().len(), 1, "{json}");
        assert_eq!(json["access"][0]["sku"], "EBOOK-FULFILL");
        assert_eq!(json["shipment"]["status"], "submitted");
        assert_eq!(json["shipment"]["address"]["line1"], "1 Main St");
        let page = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("downloads.example.com/EBOOK-FULFILL"),
            "{page}"
        );
        assert!(page.contains("1 Main St"), "{page}");
    }
}

#[actix_web::test]
async fn a_failed_payment_delivered_twenty_times_sends_one_notice() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp, None).await;
        let spec = SessionSpec::paid(&[("Desk", 30000, 1)]).with_payment_status("unpaid");
        let session = app.stripe.add_session(spec);
        let body = app.stripe.event_payload(
            "evt_failed",
            "checkout.session.async_payment_failed",
            &session,
        );

        let deliveries = (0..20).map(|_| {
            let (body, signature) = (body.clone(), sign(&body));
            async {
                app.post_webhook(body, Some(signature))
                    .await
                    .status()
                    .as_u16()
            }
        });
        let answers = join_all(deliveries).await;
        assert!(answers.iter().all(|status| *status == 200), "{answers:?}");
        app.wait_for(&session, Status::PaymentFailed).await;
        assert_eq!(
            app.wait_for_effects(&session).await,
            ["payment_failed_email"]
        );
        app.drained().await;

        let mail = smtp.accepted();
        assert_eq!(mail.len(), 1, "one notice on {}", app.backend);
        assert_eq!(
            mail[0].message_id(),
            format!("<{session}.payment_failed_email@shop.test>")
        );
        assert_eq!(
            mail[0].header("Subject").unwrap(),
            "Your payment did not go through"
        );
        let text = mail[0].text();
        assert!(
            text.contains("nothing was\r\ncharged") || text.contains("nothing was charged"),
            "{text}"
        );
        assert!(text.contains("$300.00"), "{text}");
        assert!(text.contains("http://localhost:4242"), "{text}");
    }
}

#[actix_web::test]
async fn a_receipt_waits_out_an_smtp_outage_and_arrives_once() {
    for backend in backends() {
        let smtp = SmtpServer::down();
        let app = spawn_shop(&backend, &smtp, None).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Lamp", 4500, 1)]));

        let response = app
            .deliver("evt_outage", "checkout.session.completed", &session)
            .await;
        assert_eq!(response.status(), 200);
        // Recorded at once, whatever the mail server is doing.
        app.wait_for(&session, Status::Fulfilled).await;
        let failing = wait_for_attempts(&app, 3).await;
        assert_eq!(failing.status, EffectStatus::Pending, "{}", app.backend);
        assert!(failing.last_error.is_some_and(|e| e.contains("SMTP")));
        assert!(smtp.accepted().is_empty());

        smtp.come_up();
        let mail = smtp.wait_for(1).await;
        app.wait_for_effects(&session).await;
        app.drained().await;
        assert_eq!(smtp.accepted().len(), 1, "one receipt on {}", app.backend);
        assert_eq!(
            mail[0].message_id(),
            format!("<{session}.receipt@shop.test>")
        );
    }
}

#[actix_web::test]
async fn a_recipient_refused_for_good_is_dead_at_once_and_one_refused_for_now_is_retried() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp, None).await;

        // 550: the address does not exist. Retrying for a day would change nothing.
        smtp.refuse_recipients(&[550]);
        let gone = app
            .stripe
            .add_session(SessionSpec::paid(&[("Lamp", 4500, 1)]));
        app.deliver("evt_no_user", "checkout.session.completed", &gone)
            .await;
        app.wait_for(&gone, Status::Fulfilled).await;
        let effects = crate::refunds::settled_effects(&app, &gone).await;
        assert_eq!(effects, [("receipt".to_owned(), "dead".to_owned())]);
        let id = SessionId::parse(&gone).expect("id");
        let dead = app.db.list_effects_of(&id).await.expect("db");
        assert_eq!(
            (dead[0].status, dead[0].attempts),
            (EffectStatus::Dead, 1),
            "on {backend:?}"
        );
        let reason = dead[0].last_error.clone().unwrap_or_default();
        assert!(
            reason.contains("550") && reason.contains("no such user"),
            "{reason}"
        );
        assert!(!reason.contains('@'), "no address in the reason: {reason}");
        let listed = app.cli(&["effects", "list", "--dead"]).await;
        assert!(listed.contains("no such user"), "{listed}");

        // 450: the mailbox is busy. Tried again, and sent.
        smtp.refuse_recipients(&[450]);
        let busy = app
            .stripe
            .add_session(SessionSpec::paid(&[("Lamp", 4500, 1)]));
        app.deliver("evt_busy_user", "checkout.session.completed", &busy)
            .await;
        app.wait_for(&busy, Status::Fulfilled).await;
        app.wait_for_effects(&busy).await;
        let id = SessionId::parse(&busy).expect("id");
        let sent = app.db.list_effects_of(&id).await.expect("db");
        assert_eq!(
            (sent[0].status, sent[0].attempts),
            (EffectStatus::Done, 2),
            "on {backend:?}"
        );
        assert_eq!(smtp.accepted().len(), 1);
    }
}

/// Waits until the only effect has been attempted `attempts` times, and returns it.
async fn wait_for_attempts(app: &TestApp, attempts: i32) -> fulfilld::db::effects::EffectView {
    for _ in 0..400 {
        let effects = app.db.list_effects(None, 10).await.unwrap();
        if let Some(effect) = effects.into_iter().find(|e| e.attempts >= attempts) {
            return effect;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the effect was not attempted {attempts} times on {}",
        app.backend
    );
}

#[actix_web::test]
async fn a_shipment_is_retried_with_one_idempotency_key_until_the_warehouse_accepts() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[500, 500, 500]);
        let app = spawn_shop(&backend, &smtp, Some(&warehouse)).await;
        let session = app.stripe.add_session(order());

        app.deliver("evt_ship", "checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::Fulfilled).await;
        app.wait_for_effects(&session).await;
        app.drained().await;

        let requests = warehouse.requests();
        let statuses: Vec<_> = requests.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [500, 500, 500, 200], "{}", app.backend);
        let keys: HashSet<_> = requests.iter().map(|r| r.idempotency_key.clone()).collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(
            keys.into_iter().next().flatten(),
            Some(format!("fulfilld-shipment-{session}"))
        );
        let outcome = app.outcome(&session).await.unwrap();
        assert_eq!(outcome.shipment.unwrap().status, ShipmentStatus::Submitted);
    }
}

#[actix_web::test]
async fn a_refused_shipment_is_dead_visible_and_retryable_from_the_cli() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[400]);
        let app = spawn_shop(&backend, &smtp, Some(&warehouse)).await;
        let session = app.stripe.add_session(order());

        app.deliver("evt_refused", "checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::Fulfilled).await;
        let dead = loop {
            let dead = app
                .db
                .list_effects(Some(EffectStatus::Dead), 10)
                .await
                .unwrap();
            if let Some(effect) = dead.into_iter().next() {
                break effect;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!((dead.kind.as_str(), dead.attempts), ("shipment", 1));
        assert!(
            dead.last_error.as_deref().unwrap().contains("400"),
            "{dead:?}"
        );
        let id = SessionId::parse(&session).unwrap();
        let shipment = app
            .db
            .outcome(&id)
            .await
            .unwrap()
            .unwrap()
            .shipment
            .unwrap();
        assert_eq!(shipment.status, ShipmentStatus::Failed);

        let listed = app.cli(&["effects", "list", "--dead"]).await;
        assert!(
            listed.contains(&format!("{}", dead.id)) && listed.contains("400"),
            "{listed}"
        );
        let retried = app.cli(&["effects", "retry", &dead.id.to_string()]).await;
        assert!(retried.contains("will be retried"), "{retried}");

        let requests = warehouse.wait_for(2).await;
        app.wait_for_effects(&session).await;
        assert_eq!(requests[1].status, 200);
        assert_eq!(requests[0].idempotency_key, requests[1].idempotency_key);
        let shipment = app
            .db
            .outcome(&id)
            .await
            .unwrap()
            .unwrap()
            .shipment
            .unwrap();
        assert_eq!(shipment.status, ShipmentStatus::Submitted);
    }
}

#[actix_web::test]
async fn receipts_show_amounts_in_each_currencys_minor_units_and_symbol() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp, None).await;
        let cases = [
            ("usd", 1999, "$19.99"),
            ("eur", 1250, "€12.50"),
            ("jpy", 2500, "¥2,500"),
            ("kwd", 2500, "KWD\u{a0}2.500"),
        ];
        let mut expected = Vec::new();
        for (i, (currency, amount, shown)) in cases.into_iter().enumerate() {
            let spec = SessionSpec::paid(&[("Gift card", amount, 1)]).with_currency(currency);
            let session = app.stripe.add_session(spec);
            app.deliver(
                &format!("evt_{currency}"),
                "checkout.session.completed",
                &session,
            )
            .await;
            expected.push((session, shown));
            smtp.wait_for(i + 1).await;
        }
        let mail = smtp.accepted();
        for (session, shown) in expected {
            let receipt = mail
                .iter()
                .find(|m| m.message_id().contains(&session))
                .expect("a receipt per session");
            assert!(
                receipt.decoded().contains(shown),
                "{shown} missing on {}",
                app.backend
            );
        }
    }
}

#[actix_web::test]
async fn without_smtp_each_email_is_saved_once_as_an_eml_file() {
    for backend in backends() {
        let app = crate::helpers::spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Kite", 3500, 1)]));

        for attempt in 0..3 {
            app.deliver(
                &format!("evt_eml_{attempt}"),
                "checkout.session.completed",
                &session,
            )
            .await;
        }
        app.wait_for(&session, Status::Fulfilled).await;
        app.wait_for_effects(&session).await;

        assert_eq!(app.mail_files(), [format!("{session}.receipt.eml")]);
        let saved =
            std::fs::read_to_string(app.mail_dir.path().join(format!("{session}.receipt.eml")))
                .expect("the receipt is readable");
        assert!(
            saved.contains(&format!("Message-ID: <{session}.receipt@shop.test>")),
            "{saved}"
        );
        assert!(saved.contains("$35.00"), "{saved}");
    }
}
