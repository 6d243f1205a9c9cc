//! Stock held while customers pay: a flash sale never sells more than there is, an
//! expired or abandoned checkout gives its units back, and a paid one never does.

use std::sync::Arc;

use fulfilld::catalog::Catalog;
use fulfilld::db::{Database, DatabaseUrl};
use fulfilld::domain::Status;
use fulfilld::reservations::{Swept, sweep};
use fulfilld::sandbox::StripeDouble;
use futures_util::future::join_all;

use crate::helpers::{
    Backend, CATALOG, Process, TestApp, WEBHOOK_SECRET, backends, drained, execute_on,
    no_redirects, post_webhook, sign, spawn_app_with, wait_for_status,
};

/// A fulfilld whose storefront lets one address open as many checkouts as a test needs.
async fn shop(backend: &Backend) -> TestApp {
    spawn_app_with(backend, |settings| {
        settings.client_lookups_per_min = 100_000
    })
    .await
}

/// Asks `address`'s storefront for `quantity` of `price`: the session id and the status
/// (303 with the session, 409 sold out, or anything else).
async fn checkout(
    client: &reqwest::Client,
    address: &str,
    price: &str,
    quantity: u32,
) -> (u16, Option<String>) {
    let response = client
        .post(format!("{address}/checkout"))
        .form(&[("price", price), ("quantity", &quantity.to_string())])
        .send()
        .await
        .expect("storefront answers");
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .and_then(|url| url.rsplit('/').next())
        .map(str::to_owned);
    (status, session)
}

/// Buys `quantity` mugs through `app`'s storefront, which must open a session; its id.
async fn buy_mugs(app: &TestApp, quantity: u32) -> String {
    let (status, session) = checkout(&no_redirects(), &app.address, "price_mug", quantity).await;
    assert_eq!(status, 303, "on {}", app.backend);
    session.expect("the session's id")
}

/// Marks `session` paid (or `status` otherwise) at the Stripe double, as if the customer
/// had finished checkout, without any webhook.
fn settle_at_stripe(stripe: &StripeDouble, session: &str, status: &str, payment: &str) {
    let mut spec = stripe.remove_session(session).expect("session at Stripe");
    spec.status = status.into();
    spec.payment_status = payment.into();
    stripe.insert_session(session, spec);
}

/// Delivers `event` about `session` three times at once: one event twice and a second
/// event of the same news, as Stripe may send them. The statuses answered.
async fn deliver_thrice(app: &TestApp, event: &str, session: &str, tag: &str) -> Vec<u16> {
    join_all(["a", "b", "a"].map(|n| async move {
        app.deliver(&format!("evt_{tag}_{n}_{session}"), event, session)
            .await
            .status()
            .as_u16()
    }))
    .await
}

async fn deliver_all(app: &TestApp, event: &str, sessions: &[String], tag: &str) -> Vec<u16> {
    join_all(sessions.iter().map(|session| async move {
        app.deliver(&format!("evt_{tag}_{session}"), event, session)
            .await
            .status()
            .as_u16()
    }))
    .await
}

#[actix_web::test]
async fn two_hundred_buyers_for_fifty_mugs_make_fifty_sessions_and_no_oversell() {
    for backend in backends() {
        let app = shop(&backend).await;
        app.execute("UPDATE inventory SET stock = 50 WHERE sku = 'MUG'")
            .await;
        let client = no_redirects();

        let answers =
            join_all((0..200).map(|_| checkout(&client, &app.address, "price_mug", 1))).await;

        let sessions: Vec<String> = answers
            .iter()
            .filter(|(status, _)| *status == 303)
            .filter_map(|(_, session)| session.clone())
            .collect();
        let refused = answers.iter().filter(|(status, _)| *status == 409).count();
        assert_eq!(
            (sessions.len(), refused),
            (50, 150),
            "{:?} on {}",
            answers.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            app.backend
        );
        assert_eq!(app.db.available("MUG").await.unwrap(), 0);
        assert_eq!(app.db.held("MUG").await.unwrap(), 50);
        let page = app.get("/").await.text().await.unwrap();
        assert!(
            page.contains("Enamel mug") && page.contains("Sold out"),
            "{page}"
        );

        for session in &sessions {
            settle_at_stripe(&app.stripe, session, "complete", "paid");
        }
        let statuses = deliver_all(&app, "checkout.session.completed", &sessions, "paid").await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        for session in &sessions {
            wait_for_status(&app.db, session, Status::Fulfilled).await;
        }
        app.drained().await;
        assert_eq!(app.db.stock("MUG").await.unwrap(), Some((0, false)));
        assert_eq!(app.db.held("MUG").await.unwrap(), 0);
        assert_eq!(app.db.available("MUG").await.unwrap(), 0);
    }
}

#[actix_web::test]
async fn two_replicas_share_one_stock_of_fifty() {
    for backend in backends() {
        let catalog = Arc::new(Catalog::load(std::path::Path::new(CATALOG)).expect("catalog"));
        let stripe = StripeDouble::with_catalog(catalog).expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let env = [("CLIENT_LOOKUPS_PER_MIN", "100000".to_owned())];
        let first = Process::start_with(&database.url, stripe.url(), &env).await;
        let second = Process::start_with(&database.url, stripe.url(), &env).await;
        execute_on(
            &database.url,
            "UPDATE inventory SET stock = 50 WHERE sku = 'MUG'",
        )
        .await;
        let client = no_redirects();

        let answers = join_all((0..200).map(|n| {
            let address = if n % 2 == 0 {
                &first.address
            } else {
                &second.address
            };
            checkout(&client, address, "price_mug", 1)
        }))
        .await;

        let sessions: Vec<String> = answers
            .iter()
            .filter(|(status, _)| *status == 303)
            .filter_map(|(_, session)| session.clone())
            .collect();
        let refused = answers.iter().filter(|(status, _)| *status == 409).count();
        assert_eq!(
            (sessions.len(), refused),
            (50, 150),
            "{:?} on {backend:?}",
            answers.iter().map(|(s, _)| s).collect::<Vec<_>>()
        );
        let db = Database::connect(&DatabaseUrl::parse(&database.url).expect("database URL"))
            .await
            .expect("database opens");
        assert_eq!(db.held("MUG").await.unwrap(), 50);
        assert_eq!(db.available("MUG").await.unwrap(), 0);

        // All 50 paid, each told to both replicas at once.
        for session in &sessions {
            settle_at_stripe(&stripe, session, "complete", "paid");
        }
        let statuses = join_all(sessions.iter().flat_map(|session| {
            let body = stripe.event_payload(
                &format!("evt_paid_{session}"),
                "checkout.session.completed",
                session,
            );
            [&first, &second].map(|process| {
                let (client, body) = (&client, body.clone());
                async move {
                    let signature = sign(&body);
                    post_webhook(client, &process.address, body, Some(signature))
                        .await
                        .status()
                        .as_u16()
                }
            })
        }))
        .await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        for session in &sessions {
            wait_for_status(&db, session, Status::Fulfilled).await;
        }
        drained(&db).await;
        assert_eq!(db.stock("MUG").await.unwrap(), Some((0, false)));
        assert_eq!(db.held("MUG").await.unwrap(), 0);
    }
}

#[actix_web::test]
async fn an_expired_session_gives_its_units_back_once_and_a_paid_one_keeps_them() {
    for backend in backends() {
        let app = shop(&backend).await;
        let expiring = buy_mugs(&app, 3).await;
        let paid = buy_mugs(&app, 2).await;
        assert_eq!(app.db.available("MUG").await.unwrap(), 5);

        // The expiry, delivered three times at once: the units come back once.
        settle_at_stripe(&app.stripe, &expiring, "expired", "unpaid");
        let statuses = deliver_thrice(&app, "checkout.session.expired", &expiring, "expired").await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        wait_for_status(&app.db, &expiring, Status::Expired).await;
        app.drained().await;
        assert_eq!(app.db.available("MUG").await.unwrap(), 8);

        // The payment, delivered three times at once, then a late expiry for the same
        // session.
        settle_at_stripe(&app.stripe, &paid, "complete", "paid");
        let statuses = deliver_thrice(&app, "checkout.session.completed", &paid, "paid").await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        wait_for_status(&app.db, &paid, Status::Fulfilled).await;
        let late = app
            .deliver(
                &format!("evt_late_{paid}"),
                "checkout.session.expired",
                &paid,
            )
            .await;
        assert_eq!(late.status(), 200);
        app.drained().await;

        assert_eq!(app.outcome(&paid).await.unwrap().status, Status::Fulfilled);
        assert_eq!(app.db.held("MUG").await.unwrap(), 0);
        assert_eq!(app.db.stock("MUG").await.unwrap(), Some((8, false)));
        assert_eq!(app.db.available("MUG").await.unwrap(), 8);
    }
}

#[actix_web::test]
async fn the_sweep_asks_stripe_and_never_releases_a_paid_session() {
    for backend in backends() {
        let app = shop(&backend).await;
        let mut bought = Vec::new();
        for _ in 0..4 {
            bought.push(buy_mugs(&app, 1).await);
        }
        let [paid, expired, open, waiting] = <[String; 4]>::try_from(bought).unwrap();
        // Stripe knows what happened; no webhook said so.
        settle_at_stripe(&app.stripe, &paid, "complete", "paid");
        settle_at_stripe(&app.stripe, &expired, "expired", "unpaid");
        settle_at_stripe(&app.stripe, &waiting, "complete", "unpaid");
        // A hold whose session was never created: the process died before Stripe answered.
        let far = fulfilld::db::now_ms() + 3_600_000;
        app.db
            .reserve("res_orphan", &[("MUG".to_owned(), 1)], far)
            .await
            .unwrap();
        // A hold for a session Stripe does not know (the key changed since, say).
        app.db
            .reserve("res_gone", &[("MUG".to_owned(), 1)], far)
            .await
            .unwrap();
        assert!(
            app.db
                .attach_reservation("res_gone", "cs_test_gone", far)
                .await
                .unwrap()
        );
        assert_eq!(app.db.available("MUG").await.unwrap(), 4);

        // Nothing is due before its session's expiry.
        let now = fulfilld::db::now_ms();
        assert_eq!(
            sweep(&app.sessions, &app.db, now).await.unwrap(),
            Swept::default()
        );

        app.execute("UPDATE reservations SET expires_at = 1").await;
        let swept = sweep(&app.sessions, &app.db, now).await.unwrap();
        assert_eq!(
            swept,
            Swept {
                released: 3,
                taken: 1,
                kept: 2
            },
            "on {}",
            app.backend
        );
        assert_eq!(app.outcome(&paid).await.unwrap().status, Status::Fulfilled);
        assert_eq!(app.outcome(&expired).await.unwrap().status, Status::Expired);
        assert_eq!(
            app.outcome(&waiting).await.unwrap().status,
            Status::AwaitingPayment
        );
        // Stripe still shows it open: nothing to record, and its hold stays.
        assert!(app.outcome(&open).await.is_none());
        app.drained().await;
        // The paid mug left the stock; the open and the waiting ones are still held.
        assert_eq!(app.db.stock("MUG").await.unwrap(), Some((9, false)));
        assert_eq!(app.db.held("MUG").await.unwrap(), 2);
        assert_eq!(app.db.available("MUG").await.unwrap(), 7);

        // The open session is looked at again ten minutes later, the waiting one not at
        // all: its payment's own event will settle it.
        let calls = (app.stripe.calls(&open), app.stripe.calls(&waiting));
        let swept = sweep(&app.sessions, &app.db, now).await.unwrap();
        assert_eq!(swept, Swept::default());
        let later = now + 11 * 60 * 1000;
        let swept = sweep(&app.sessions, &app.db, later).await.unwrap();
        assert_eq!(
            swept,
            Swept {
                released: 0,
                taken: 0,
                kept: 1
            }
        );
        assert_eq!(
            (app.stripe.calls(&open), app.stripe.calls(&waiting)),
            (calls.0 + 1, calls.1)
        );

        // Retention forgets the settled holds, never the held ones.
        let pruned_before = fulfilld::db::now_ms() + 1;
        assert_eq!(app.db.prune_reservations(pruned_before).await.unwrap(), 4);
        assert_eq!(app.db.held("MUG").await.unwrap(), 2);
        assert_eq!(app.db.available("MUG").await.unwrap(), 7);
    }
}

#[actix_web::test]
async fn an_abandoned_checkout_expires_at_stripe_and_its_units_come_back() {
    for backend in backends() {
        let app = shop(&backend).await;
        let session = buy_mugs(&app, 4).await;
        assert_eq!(app.db.available("MUG").await.unwrap(), 6);

        // Stripe expires the session at its `expires_at` and says so by webhook.
        let mut spec = app.stripe.remove_session(&session).unwrap();
        spec.expires_at = fulfilld::db::now_ms() / 1000 - 1;
        app.stripe.insert_session(&session, spec);
        app.stripe
            .send_webhooks_to(&format!("{}/webhook", app.address), WEBHOOK_SECRET);
        app.stripe
            .spawn_expiry(std::time::Duration::from_millis(50));

        wait_for_status(&app.db, &session, Status::Expired).await;
        assert_eq!(app.db.held("MUG").await.unwrap(), 0);
        assert_eq!(app.db.available("MUG").await.unwrap(), 10);
    }
}

#[actix_web::test]
async fn a_delayed_payment_keeps_its_hold_until_it_fails_and_then_gives_it_back() {
    for backend in backends() {
        let app = shop(&backend).await;
        let session = buy_mugs(&app, 2).await;

        // Paid by bank debit: complete, not yet paid. The units stay held.
        settle_at_stripe(&app.stripe, &session, "complete", "unpaid");
        let completed = app
            .deliver(
                &format!("evt_c_{session}"),
                "checkout.session.completed",
                &session,
            )
            .await;
        assert_eq!(completed.status(), 200);
        wait_for_status(&app.db, &session, Status::AwaitingPayment).await;
        assert_eq!(app.db.held("MUG").await.unwrap(), 2);
        assert_eq!(app.db.available("MUG").await.unwrap(), 8);

        // The debit fails: the units come back, and nothing left the stock.
        let failed = app
            .deliver(
                &format!("evt_f_{session}"),
                "checkout.session.async_payment_failed",
                &session,
            )
            .await;
        assert_eq!(failed.status(), 200);
        wait_for_status(&app.db, &session, Status::PaymentFailed).await;
        app.drained().await;
        assert_eq!(app.db.held("MUG").await.unwrap(), 0);
        assert_eq!(app.db.available("MUG").await.unwrap(), 10);
        assert_eq!(app.db.stock("MUG").await.unwrap(), Some((10, false)));
    }
}
