//! Refunds reverse a fulfilment exactly once: duplicate and concurrent news, news of one
//! refund in several forms, partial refunds that add up, a refund that fails later, a
//! refund that arrives before the session's own `completed` event or races it.

use std::time::{Duration, Instant};

use fulfilld::domain::{
    GrantStatus, NewsKind, Progress, RefundStatus, ReversalNews, ShipmentStatus, Status,
};
use fulfilld::sandbox::{RefundSpec, SessionSpec};
use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{TestApp, backends, sign, spawn_app_with, unix_now, wait_for_event};
use crate::smtp::SmtpServer;
use crate::warehouse::Warehouse;

const EBOOK_URL: &str = "https://downloads.example.com/EBOOK-FULFILL?order=";

/// A shop that mails through `smtp`.
pub(crate) async fn spawn_shop(backend: &crate::helpers::Backend, smtp: &SmtpServer) -> TestApp {
    spawn_app_with(backend, |settings| {
        settings.effects.smtp_url = Some(smtp.url());
    })
    .await
}

/// A paid session for the e-book (900) and a poster (1,100) that is not in the catalog.
pub(crate) fn ebook_and_poster() -> SessionSpec {
    SessionSpec::paid(&[("E-book", 900, 1), ("Poster", 1100, 1)])
        .with_prices(&["price_ebook", "price_poster"])
}

/// Posts every body `times` times, each signed, all at once; every delivery must be
/// acknowledged.
pub(crate) async fn deliver_many(app: &TestApp, bodies: &[String], times: usize) {
    let deliveries = bodies.iter().flat_map(|body| {
        (0..times).map(move |_| async move {
            app.post_webhook(body.clone(), Some(sign(body)))
                .await
                .status()
                .as_u16()
        })
    });
    let answers = join_all(deliveries).await;
    assert!(answers.iter().all(|status| *status == 200), "{answers:?}");
}

/// Waits until the session's stored refunded amount is `refunded`, and returns its status.
pub(crate) async fn wait_for_refunded(app: &TestApp, session: &str, refunded: i64) -> Status {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(outcome) = app.outcome(session).await
            && outcome.amount_refunded == refunded
        {
            return outcome.status;
        }
        assert!(
            Instant::now() < deadline,
            "{session} never had {refunded} refunded on {}: {:?}, events {:?}",
            app.backend,
            app.outcome(session).await,
            app.db.list_events(false, 100).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The session as the JSON route shows it, once it shows `status` (a replica's memory of a
/// settled session is read again within a second).
async fn json_once(app: &TestApp, session: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let json: Value = app
            .get(&format!("/api/checkout-sessions/{session}"))
            .await
            .json()
            .await
            .expect("JSON");
        if json["status"] == status {
            return json;
        }
        assert!(Instant::now() < deadline, "{json}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The session's effects (kind, status) once none is pending.
pub(crate) async fn settled_effects(app: &TestApp, session: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let effects = app.effects(session).await;
        if effects.iter().all(|(_, status)| status != "pending") {
            return effects;
        }
        assert!(Instant::now() < deadline, "{effects:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A session of [`ebook_and_poster`] delivered to `app` once and fulfilled; with its
/// outcome then.
async fn ebook_and_poster_fulfilled(app: &TestApp) -> (String, fulfilld::domain::Outcome) {
    let session = app.stripe.add_session(ebook_and_poster());
    let paid = app
        .stripe
        .event_payload("evt_paid", "checkout.session.completed", &session);
    deliver_many(app, &[paid], 1).await;
    let fulfilled = app.wait_for(&session, Status::Fulfilled).await;
    (session, fulfilled)
}

/// How many messages the SMTP server accepted with this `Message-ID` name.
pub(crate) fn mails(smtp: &SmtpServer, session: &str, kind: &str) -> usize {
    let wanted = format!("<{session}.{kind}@shop.test>");
    smtp.accepted()
        .iter()
        .filter(|mail| mail.message_id() == wanted)
        .count()
}

#[actix_web::test]
async fn a_full_refund_told_many_times_in_every_form_revokes_access_and_mails_once() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp).await;
        let (session, fulfilled) = ebook_and_poster_fulfilled(&app).await;
        assert_eq!(fulfilled.access[0].status, GrantStatus::Active);
        // The receipt went before the refund came.
        assert_eq!(app.wait_for_effects(&session).await, ["receipt"]);
        let page = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await;
        assert!(page.text().await.expect("page").contains(EBOOK_URL));

        // One refund of the whole 2,000, told as it is created, as it succeeds and as its
        // charge is refunded; each delivered ten times, all at once.
        let refund = RefundSpec {
            id: "re_full",
            session: &session,
            amount: 2000,
            status: "pending",
            items: None,
        };
        let now = unix_now();
        let created = app
            .stripe
            .refund_payload("evt_re_created", "refund.created", &refund, now);
        let succeeded = RefundSpec {
            status: "succeeded",
            ..refund
        };
        let updated =
            app.stripe
                .refund_payload("evt_re_updated", "refund.updated", &succeeded, now + 1);
        let charge = app
            .stripe
            .charge_refunded_payload("evt_ch_refunded", &session, 2000);
        let bodies: Vec<String> = (0..10)
            .flat_map(|_| [created.clone(), updated.clone(), charge.clone()])
            .collect();
        deliver_many(&app, &bodies, 1).await;

        assert_eq!(
            wait_for_refunded(&app, &session, 2000).await,
            Status::Refunded,
            "on {backend:?}"
        );
        let kinds = app.wait_for_effects(&session).await;
        assert_eq!(kinds, ["receipt", "refund_email"], "on {backend:?}");
        let json = json_once(&app, &session, "refunded").await;
        assert_eq!(json["amount_refunded"], 2000);
        assert_eq!(json["access"][0]["status"], "revoked", "{json}");
        assert!(
            json["access"][0].get("url").is_none(),
            "the link is gone: {json}"
        );
        let page = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await
            .text()
            .await
            .expect("page");
        assert!(page.contains("Order refunded"), "{page}");
        assert!(!page.contains(EBOOK_URL), "the link is gone: {page}");

        let shown = app.cli(&["sessions", "show", &session]).await;
        assert!(shown.contains(": refunded\n"), "{shown}");
        assert!(shown.contains("refunded: USD 20.00"), "{shown}");
        assert!(shown.contains("(revoked)"), "{shown}");
        assert!(
            shown.contains("event evt_re_updated refund.updated: processed"),
            "{shown}"
        );

        app.drained().await;
        assert_eq!(mails(&smtp, &session, "receipt"), 1, "on {backend:?}");
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
        let refund_mail = smtp
            .accepted()
            .into_iter()
            .find(|mail| mail.message_id().contains("refund_email"))
            .expect("the refund email");
        assert!(refund_mail.text().contains("refunded in full"));
        assert!(!refund_mail.text().contains(EBOOK_URL));
    }
}

#[actix_web::test]
async fn partial_refunds_add_up_items_they_name_are_revoked_and_a_failed_one_undoes_nothing() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp).await;
        let (session, _) = ebook_and_poster_fulfilled(&app).await;
        assert_eq!(app.wait_for_effects(&session).await, ["receipt"]);
        let now = unix_now();
        let refund = |id, amount, status, items| RefundSpec {
            id,
            session: &session,
            amount,
            status,
            items,
        };

        // 500 back, no items named: amounts only, access kept.
        let first = refund("re_1", 500, "succeeded", None);
        deliver_many(
            &app,
            &[app
                .stripe
                .refund_payload("evt_1", "refund.created", &first, now)],
            1,
        )
        .await;
        assert_eq!(
            wait_for_refunded(&app, &session, 500).await,
            Status::PartiallyRefunded
        );
        // The same 500 told by the charge (an older API version's news) is not added
        // again.
        let charge = app
            .stripe
            .charge_refunded_payload("evt_ch_1", &session, 500);
        deliver_many(&app, &[on_api_version(&charge, "2024-09-30.acacia")], 1).await;
        wait_for_event(&app.db, "evt_ch_1", |event| event.processed_at.is_some()).await;
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.amount_refunded, 500);
        assert_eq!(outcome.access[0].status, GrantStatus::Active);

        // 900 for the e-book, named: its access goes, and the customer is mailed once
        // what was refunded.
        let ebook = refund("re_2", 900, "succeeded", Some("EBOOK-FULFILL:1"));
        deliver_many(
            &app,
            &[app
                .stripe
                .refund_payload("evt_2", "refund.created", &ebook, now)],
            1,
        )
        .await;
        wait_for_refunded(&app, &session, 1400).await;
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.status, Status::PartiallyRefunded);
        assert_eq!(outcome.access[0].status, GrantStatus::Revoked);
        assert_eq!(
            app.wait_for_effects(&session).await,
            ["receipt", "refund_email"],
            "on {backend:?}"
        );
        app.drained().await;
        assert_eq!(
            mails(&smtp, &session, "refund_email.re_2"),
            1,
            "on {backend:?}"
        );
        let item_mail = smtp
            .accepted()
            .into_iter()
            .find(|mail| mail.message_id().contains("refund_email.re_2"))
            .expect("the item refund's email");
        assert!(item_mail.text().contains("Part of your order"));
        assert!(
            item_mail.text().contains(&outcome.access[0].name),
            "{}",
            item_mail.text()
        );

        // That refund fails later: recorded, and the access stays revoked. The older
        // `refund.created` delivered again after it changes nothing.
        let failed = refund("re_2", 900, "failed", Some("EBOOK-FULFILL:1"));
        deliver_many(
            &app,
            &[app
                .stripe
                .refund_payload("evt_2_failed", "refund.failed", &failed, now + 5)],
            1,
        )
        .await;
        wait_for_refunded(&app, &session, 500).await;
        deliver_many(
            &app,
            &[app
                .stripe
                .refund_payload("evt_2_again", "refund.created", &ebook, now)],
            1,
        )
        .await;
        wait_for_event(&app.db, "evt_2_again", |event| event.processed_at.is_some()).await;
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.amount_refunded, 500, "on {backend:?}");
        assert_eq!(outcome.status, Status::PartiallyRefunded);
        assert_eq!(outcome.access[0].status, GrantStatus::Revoked);
        assert_eq!(
            app.effect_kinds(&session).await,
            ["receipt", "refund_email"]
        );

        // The rest comes back: a full refund, mailed once.
        let rest = refund("re_3", 1500, "succeeded", None);
        deliver_many(
            &app,
            &[app
                .stripe
                .refund_payload("evt_3", "refund.created", &rest, now + 6)],
            1,
        )
        .await;
        assert_eq!(
            wait_for_refunded(&app, &session, 2000).await,
            Status::Refunded
        );
        assert_eq!(
            app.wait_for_effects(&session).await,
            ["receipt", "refund_email", "refund_email"]
        );
        app.drained().await;
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
        assert_eq!(mails(&smtp, &session, "refund_email.re_2"), 1);
    }
}

#[actix_web::test]
async fn a_refund_before_or_racing_completed_fulfils_once_then_reverses_once() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp).await;
        let now = unix_now();

        // Before: Stripe's `completed` event has not come at all.
        let early = app.stripe.add_session(ebook_and_poster());
        let refund = RefundSpec {
            id: "re_early",
            session: &early,
            amount: 2000,
            status: "succeeded",
            items: None,
        };
        deliver_many(
            &app,
            &[app
                .stripe
                .refund_payload("evt_early", "refund.created", &refund, now)],
            1,
        )
        .await;
        assert_eq!(
            wait_for_refunded(&app, &early, 2000).await,
            Status::Refunded
        );
        deliver_many(
            &app,
            &[app
                .stripe
                .event_payload("evt_early_paid", "checkout.session.completed", &early)],
            1,
        )
        .await;
        wait_for_event(&app.db, "evt_early_paid", |event| {
            event.processed_at.is_some()
        })
        .await;

        // Racing: the refund and the `completed` event, ten of each, all at once.
        let raced = app.stripe.add_session(ebook_and_poster());
        let refund = RefundSpec {
            id: "re_raced",
            session: &raced,
            ..refund
        };
        let completed =
            app.stripe
                .event_payload("evt_raced_paid", "checkout.session.completed", &raced);
        let refunded = app
            .stripe
            .refund_payload("evt_raced", "refund.created", &refund, now);
        let bodies: Vec<String> = (0..10)
            .flat_map(|_| [completed.clone(), refunded.clone()])
            .collect();
        deliver_many(&app, &bodies, 1).await;
        assert_eq!(
            wait_for_refunded(&app, &raced, 2000).await,
            Status::Refunded
        );

        // The receipt went, or was cancelled by the refund before it could: never twice.
        let mut receipts = Vec::new();
        for session in [&early, &raced] {
            let outcome = app.outcome(session).await.expect("recorded");
            assert_eq!(outcome.status, Status::Refunded, "on {backend:?}");
            assert!(outcome.fulfilled_at.is_some());
            let effects = settled_effects(&app, session).await;
            assert_eq!(effects[1], ("refund_email".into(), "done".into()));
            assert_eq!(effects[0].0, "receipt");
            assert!(
                ["done", "cancelled"].contains(&effects[0].1.as_str()),
                "{effects:?}"
            );
            receipts.push(usize::from(effects[0].1 == "done"));
        }
        app.drained().await;
        for (session, receipt) in [&early, &raced].into_iter().zip(receipts) {
            assert_eq!(mails(&smtp, session, "receipt"), receipt, "on {backend:?}");
            assert_eq!(mails(&smtp, session, "refund_email"), 1, "on {backend:?}");
        }
    }
}

#[actix_web::test]
async fn a_refund_of_a_payment_no_session_made_is_acknowledged_and_changes_nothing() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp).await;
        // The session exists only in the refund's payment intent: Stripe lists none for it.
        let stranger = "cs_test_a1NotMadeByCheckout";
        let refund = RefundSpec {
            id: "re_stranger",
            session: stranger,
            amount: 700,
            status: "succeeded",
            items: None,
        };
        deliver_many(
            &app,
            &[app
                .stripe
                .refund_payload("evt_stranger", "refund.created", &refund, unix_now())],
            1,
        )
        .await;
        let event = wait_for_event(&app.db, "evt_stranger", |event| {
            event.processed_at.is_some()
        })
        .await;
        assert!(event.last_error.is_none(), "{event:?}");
        assert!(app.outcome(stranger).await.is_none(), "on {backend:?}");
        // Stripe was asked once: later news of the same payment costs no call.
        let calls = app.stripe.call_times().len();
        assert!(calls >= 1);
        let again = app.stripe.refund_payload(
            "evt_stranger_again",
            "refund.updated",
            &refund,
            unix_now() + 1,
        );
        deliver_many(&app, &[again], 1).await;
        wait_for_event(&app.db, "evt_stranger_again", |event| {
            event.processed_at.is_some()
        })
        .await;
        assert_eq!(app.stripe.call_times().len(), calls, "on {backend:?}");
        // Kept a day, not for ever: after that, Stripe is asked again.
        app.execute("UPDATE foreign_payment_intents SET checked_at = 0")
            .await;
        let later = app.stripe.refund_payload(
            "evt_stranger_later",
            "refund.updated",
            &refund,
            unix_now() + 2,
        );
        deliver_many(&app, &[later], 1).await;
        wait_for_event(&app.db, "evt_stranger_later", |event| {
            event.processed_at.is_some()
        })
        .await;
        assert_eq!(app.stripe.call_times().len(), calls + 1, "on {backend:?}");

        // A refund event without a payment intent is not about a Checkout payment.
        let mut body: Value = serde_json::from_str(&app.stripe.refund_payload(
            "evt_no_pi",
            "refund.created",
            &refund,
            unix_now(),
        ))
        .expect("JSON");
        body["data"]["object"]["payment_intent"] = Value::Null;
        let response = app
            .post_webhook(body.to_string(), Some(sign(&body.to_string())))
            .await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("JSON");
        assert_eq!(answer["ignored"], true);
    }
}

#[actix_web::test]
async fn a_full_refund_before_the_payment_clears_ships_nothing_moves_no_stock_and_mails_once() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.smtp_url = Some(smtp.url());
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let stock = app.db.stock("TEE-M").await.expect("db");
        let spec = SessionSpec::paid(&[("T-shirt", 2500, 1)])
            .with_prices(&["price_tee_m"])
            .with_shipping("Ada Lovelace", "1 Analytical Way", "London", "N1 1AA", "GB")
            .with_payment_status("unpaid");
        let session = app.stripe.add_session(spec);
        deliver_many(
            &app,
            &[app
                .stripe
                .event_payload("evt_pending", "checkout.session.completed", &session)],
            1,
        )
        .await;
        app.wait_for(&session, Status::AwaitingPayment).await;

        // Stripe tells of the refund before it tells that the payment cleared: the refund
        // waits, and applies with the fulfilment, in its transaction.
        let refund = RefundSpec {
            id: "re_before_clearing",
            session: &session,
            amount: 2500,
            status: "succeeded",
            items: None,
        };
        let told = app
            .stripe
            .refund_payload("evt_refund", "refund.created", &refund, unix_now());
        deliver_many(&app, std::slice::from_ref(&told), 1).await;
        wait_for_event(&app.db, "evt_refund", |event| {
            event
                .last_error
                .as_deref()
                .is_some_and(|error| error.contains("has not cleared"))
        })
        .await;
        app.stripe.set_payment_status(&session, "paid");
        deliver_many(
            &app,
            &[app.stripe.event_payload(
                "evt_cleared",
                "checkout.session.async_payment_succeeded",
                &session,
            )],
            1,
        )
        .await;

        assert_eq!(
            wait_for_refunded(&app, &session, 2500).await,
            Status::Refunded,
            "on {backend:?}"
        );
        let effects = settled_effects(&app, &session).await;
        let expected: Vec<(String, String)> = [
            ("receipt", "cancelled"),
            ("inventory", "cancelled"),
            ("shipment", "cancelled"),
            ("refund_email", "done"),
        ]
        .map(|(kind, status)| (kind.to_owned(), status.to_owned()))
        .into();
        assert_eq!(effects, expected, "on {backend:?}");
        let outcome = app.outcome(&session).await.expect("recorded");
        let shipment = outcome.shipment.expect("a shipment");
        assert_eq!(shipment.status, ShipmentStatus::Cancelled);
        assert_eq!(app.db.stock("TEE-M").await.expect("db"), stock);
        // The refund's own event still waits for its retry, minutes away; told again, it
        // is carried out at once and finds the refund applied: nothing more happens.
        deliver_many(&app, &[told], 1).await;
        app.drained().await;
        assert!(warehouse.requests().is_empty(), "nothing shipped");
        assert_eq!(mails(&smtp, &session, "receipt"), 0, "on {backend:?}");
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
    }
}

#[actix_web::test]
async fn a_full_refund_puts_back_stock_for_goods_that_never_left_once() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[]);
        let app = spawn_shop(&backend, &smtp).await;
        let shipped_app = spawn_app_with(&backend, |settings| {
            settings.effects.smtp_url = Some(smtp.url());
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let mug = || {
            SessionSpec::paid(&[("Mug", 1200, 2)])
                .with_prices(&["price_mug"])
                .with_shipping("Ada Lovelace", "1 Analytical Way", "London", "N1 1AA", "GB")
        };
        for (app, shipped) in [(&app, false), (&shipped_app, true)] {
            let stock = app.db.stock("MUG").await.expect("db").expect("stocked").0;
            let session = app.stripe.add_session(mug());
            deliver_many(
                app,
                &[app
                    .stripe
                    .event_payload("evt_mug", "checkout.session.completed", &session)],
                1,
            )
            .await;
            app.wait_for(&session, Status::Fulfilled).await;
            settled_effects(app, &session).await;
            let taken = app.db.stock("MUG").await.expect("db").expect("stocked").0;
            assert_eq!(taken, stock - 2);
            let status = app.outcome(&session).await.expect("recorded").shipment;
            let status = status.expect("a shipment").status;
            assert_eq!(
                status,
                if shipped {
                    ShipmentStatus::Submitted
                } else {
                    ShipmentStatus::AwaitingManualHandling
                }
            );

            // The refund, told three ways (the charge on an older API version), twice
            // each.
            let refund = RefundSpec {
                id: "re_mugs",
                session: &session,
                amount: 2400,
                status: "succeeded",
                items: None,
            };
            let news = [
                app.stripe
                    .refund_payload("evt_mugs", "refund.created", &refund, unix_now()),
                app.stripe
                    .refund_payload("evt_mugs_u", "refund.updated", &refund, unix_now()),
                on_api_version(
                    &app.stripe
                        .charge_refunded_payload("evt_mugs_ch", &session, 2400),
                    "2024-09-30.acacia",
                ),
            ];
            deliver_many(app, &[news.clone(), news].concat(), 1).await;
            assert_eq!(
                wait_for_refunded(app, &session, 2400).await,
                Status::Refunded
            );
            for event in ["evt_mugs", "evt_mugs_u", "evt_mugs_ch"] {
                wait_for_event(&app.db, event, |event| event.processed_at.is_some()).await;
            }
            let after = app.db.stock("MUG").await.expect("db").expect("stocked").0;
            let shipment = app.outcome(&session).await.expect("recorded").shipment;
            let shipment = shipment.expect("a shipment").status;
            if shipped {
                // The warehouse had the order: it is asked, once, to cancel it, under a
                // key of its own, and its yes puts the stock back.
                let effects = settled_effects(app, &session).await;
                assert!(
                    effects.contains(&("shipment_cancel".into(), "done".into())),
                    "{effects:?}"
                );
                let requests = warehouse.requests();
                let kinds: Vec<_> = requests.iter().map(|r| r.body["type"].clone()).collect();
                assert_eq!(kinds, ["shipment.requested", "shipment.cancel_requested"]);
                assert_eq!(
                    requests[1].idempotency_key.as_deref(),
                    Some(format!("fulfilld-shipment-cancel-{session}").as_str())
                );
                let after = app.db.stock("MUG").await.expect("db").expect("stocked").0;
                let shipment = app.outcome(&session).await.expect("recorded").shipment;
                let shipment = shipment.expect("a shipment").status;
                assert_eq!((after, shipment), (stock, ShipmentStatus::Cancelled));
            } else {
                assert_eq!((after, shipment), (stock, ShipmentStatus::Cancelled));
            }
        }
    }
}

#[actix_web::test]
async fn a_refund_stored_by_an_attempt_that_stopped_applies_with_the_fulfilment() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp).await;
        let session = app.stripe.add_session(ebook_and_poster());
        // What refund news leaves behind when its process dies after storing it and before
        // applying it: the refund, and no session recorded yet.
        let news = ReversalNews {
            id: "re_orphan".into(),
            kind: NewsKind::Refund,
            payment_intent: app.stripe.payment_intent(&session),
            amount: 2000,
            status: Progress::Refund(RefundStatus::Succeeded),
            items: None,
            event_created: unix_now(),
        };
        assert!(app.db.store_refund(&news).await.expect("db"));

        deliver_many(
            &app,
            &[app
                .stripe
                .event_payload("evt_paid", "checkout.session.completed", &session)],
            1,
        )
        .await;
        // Reversed in the fulfilment's own transaction: no receipt ever goes.
        let outcome = app.wait_for(&session, Status::Refunded).await;
        assert_eq!(outcome.amount_refunded, 2000);
        assert_eq!(outcome.access[0].status, GrantStatus::Revoked);
        let effects = settled_effects(&app, &session).await;
        let expected: Vec<(String, String)> = [("receipt", "cancelled"), ("refund_email", "done")]
            .map(|(kind, status)| (kind.to_owned(), status.to_owned()))
            .into();
        assert_eq!(effects, expected, "on {backend:?}");
        app.drained().await;
        assert_eq!(mails(&smtp, &session, "receipt"), 0, "on {backend:?}");
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
    }
}

/// `body`, an event, as an account on Stripe API version `version` receives it.
fn on_api_version(body: &str, version: &str) -> String {
    let mut event: Value = serde_json::from_str(body).expect("JSON");
    event["api_version"] = version.into();
    event.to_string()
}

/// Delivers `body` once and waits until what was stored of it is carried out: an event
/// fulfilld answers as ignored is not stored, and nothing is left to wait for.
async fn carried_out(app: &TestApp, event_id: &str, body: String) {
    let response = app.post_webhook(body.clone(), Some(sign(&body))).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    if answer["ignored"] != true {
        wait_for_event(&app.db, event_id, |event| event.processed_at.is_some()).await;
    }
}

#[actix_web::test]
async fn a_charge_refunded_on_a_current_api_version_reverses_nothing_while_its_refund_is_pending() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp).await;
        let (session, _) = ebook_and_poster_fulfilled(&app).await;
        assert_eq!(app.wait_for_effects(&session).await, ["receipt"]);

        // Since 2024-10-28 Stripe tells of every refund with refund events, and tells of
        // the charge beside them. Its `amount_refunded` counts a refund still pending,
        // which may yet be canceled; here its news comes first.
        let charge = app
            .stripe
            .charge_refunded_payload("evt_ch_pending", &session, 2000);
        carried_out(&app, "evt_ch_pending", charge).await;
        let refund = RefundSpec {
            id: "re_pending",
            session: &session,
            amount: 2000,
            status: "pending",
            items: None,
        };
        let now = unix_now();
        let created = app
            .stripe
            .refund_payload("evt_re_pending", "refund.created", &refund, now);
        carried_out(&app, "evt_re_pending", created).await;
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(
            (outcome.status, outcome.amount_refunded),
            (Status::Fulfilled, 0),
            "on {backend:?}"
        );
        assert_eq!(outcome.access[0].status, GrantStatus::Active);
        assert_eq!(
            app.effect_kinds(&session).await,
            ["receipt"],
            "on {backend:?}"
        );

        // The refund succeeds: now, and once, the order is refunded.
        let succeeded = RefundSpec {
            status: "succeeded",
            ..refund
        };
        let updated =
            app.stripe
                .refund_payload("evt_re_succeeded", "refund.updated", &succeeded, now + 1);
        deliver_many(&app, &[updated], 2).await;
        assert_eq!(
            wait_for_refunded(&app, &session, 2000).await,
            Status::Refunded,
            "on {backend:?}"
        );
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.access[0].status, GrantStatus::Revoked);
        assert_eq!(
            app.wait_for_effects(&session).await,
            ["receipt", "refund_email"]
        );
        app.drained().await;
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
    }
}

#[actix_web::test]
async fn on_an_older_api_version_the_charges_refunded_amount_is_a_floor_never_added() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp).await;
        let (session, _) = ebook_and_poster_fulfilled(&app).await;
        let now = unix_now();
        let first = RefundSpec {
            id: "re_told",
            session: &session,
            amount: 500,
            status: "succeeded",
            items: None,
        };
        let told = app
            .stripe
            .refund_payload("evt_re_told", "refund.created", &first, now);
        deliver_many(&app, &[told], 1).await;
        wait_for_refunded(&app, &session, 500).await;

        // The charge has 700 refunded: 200 more went back by a refund no event told of.
        let charge = app
            .stripe
            .charge_refunded_payload("evt_ch_older", &session, 700);
        let charge = on_api_version(&charge, "2024-09-30.acacia");
        carried_out(&app, "evt_ch_older", charge).await;
        assert_eq!(
            wait_for_refunded(&app, &session, 700).await,
            Status::PartiallyRefunded,
            "on {backend:?}"
        );

        // That refund's own news comes later: the charge had counted it already.
        let second = RefundSpec {
            id: "re_late",
            amount: 200,
            ..first
        };
        let late = app
            .stripe
            .refund_payload("evt_re_late", "refund.created", &second, now + 1);
        carried_out(&app, "evt_re_late", late).await;
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(
            (outcome.status, outcome.amount_refunded),
            (Status::PartiallyRefunded, 700),
            "on {backend:?}"
        );
        assert_eq!(outcome.access[0].status, GrantStatus::Active);
    }
}

#[actix_web::test]
async fn news_of_an_order_fulfilled_before_fulfilld_knew_it_is_recorded_without_fulfilling_it() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.smtp_url = Some(smtp.url());
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let created_ago = |seconds: i64| {
            let mut spec = SessionSpec::paid(&[("Mug", 1200, 1), ("E-book", 900, 1)])
                .with_prices(&["price_mug", "price_ebook"])
                .with_shipping("Ada Lovelace", "1 Analytical Way", "London", "N1 1AA", "GB");
            spec.created = unix_now() - seconds;
            spec
        };
        let stock = app.db.stock("MUG").await.expect("db").expect("stocked").0;
        // Paid a month ago and fulfilled then, before fulfilld or by hand: fulfilld never
        // recorded it. A partial refund of it, naming no items, is made now.
        let old = app.stripe.add_session(created_ago(30 * 86_400));
        let refund = RefundSpec {
            id: "re_old",
            session: &old,
            amount: 500,
            status: "succeeded",
            items: None,
        };
        let told = app
            .stripe
            .refund_payload("evt_re_old", "refund.created", &refund, unix_now());
        deliver_many(&app, &[told], 1).await;
        let event =
            wait_for_event(&app.db, "evt_re_old", |event| event.processed_at.is_some()).await;
        assert!(event.last_error.is_none(), "{event:?}");
        let json = json_once(&app, &old, "partially_refunded").await;
        assert_eq!(json["amount_refunded"], 500, "{json}");
        assert!(
            json["fulfilled_at"].is_null(),
            "not fulfilled by fulfilld: {json}"
        );
        assert_eq!(json["access"], Value::Array(Vec::new()), "{json}");
        assert!(json.get("shipment").is_none_or(Value::is_null), "{json}");
        app.drained().await;
        let effects = app.effects(&old).await;
        assert!(effects.is_empty(), "on {backend:?}: {effects:?}");
        let movements = app.db.stock_movements_of(&old).await.expect("db");
        assert!(movements.is_empty(), "{movements:?}");
        assert_eq!(
            app.db.stock("MUG").await.expect("db").expect("stocked").0,
            stock
        );
        assert_eq!(mails(&smtp, &old, "receipt"), 0, "on {backend:?}");
        assert!(warehouse.requests().is_empty(), "on {backend:?}");

        // Paid an hour ago, its `completed` event not carried out yet: the refund fulfils
        // it first, then applies.
        let recent = app.stripe.add_session(created_ago(3600));
        let refund = RefundSpec {
            id: "re_recent",
            session: &recent,
            ..refund
        };
        let told =
            app.stripe
                .refund_payload("evt_re_recent", "refund.created", &refund, unix_now());
        deliver_many(&app, &[told], 1).await;
        assert_eq!(
            wait_for_refunded(&app, &recent, 500).await,
            Status::PartiallyRefunded,
            "on {backend:?}"
        );
        assert_eq!(
            app.wait_for_effects(&recent).await,
            ["receipt", "inventory", "shipment"],
            "on {backend:?}"
        );
        app.drained().await;
        assert_eq!(
            app.db.stock("MUG").await.expect("db").expect("stocked").0,
            stock - 1
        );
        assert_eq!(mails(&smtp, &recent, "receipt"), 1, "on {backend:?}");
        assert_eq!(warehouse.requests().len(), 1, "on {backend:?}");
    }
}
