//! `fulfilld reconcile`, `events replay` and `sessions show`, run as the operator would,
//! against the Stripe simulator.

use fulfilld::db::{Database, DatabaseUrl};
use fulfilld::domain::{EffectKind, SessionId, Status};
use fulfilld::sandbox::{SessionSpec, StripeDouble};

use crate::helpers::{
    CATALOG, STRIPE_SECRET_KEY, WEBHOOK_SECRET, assert_each_fulfilled_once, backends,
    wait_for_status,
};

/// Runs the fulfilld binary with `args`; returns (success, stdout, stderr).
async fn fulfilld(database_url: &str, stripe: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY)
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("STRIPE_API_BASE", stripe)
        .env("STRIPE_MAX_RPS", "1000")
        .env("CATALOG", CATALOG)
        .env("RUST_LOG", "off")
        .output()
        .await
        .expect("fulfilld runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[actix_web::test]
async fn reconcile_fulfils_what_no_webhook_delivered_once_and_a_second_run_does_nothing() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        // The endpoint was down: Stripe recorded the events, none arrived.
        stripe.drop_webhooks(true);
        let missed: Vec<String> = (0..3)
            .map(|n| stripe.add_session(SessionSpec::paid(&[("Atlas", 1000 + n, 1)])))
            .collect();
        for session in &missed {
            stripe.emit("checkout.session.completed", session).await;
        }
        let failed = stripe
            .add_session(SessionSpec::paid(&[("Globe", 5000, 1)]).with_payment_status("unpaid"));
        stripe
            .emit("checkout.session.async_payment_failed", &failed)
            .await;
        // Complete, with no event at all (older than the events kept, say).
        let silent = stripe.add_session(SessionSpec::paid(&[("Compass", 2500, 1)]));
        let open = stripe.add_session(SessionSpec::paid(&[("Chart", 900, 1)]).with_status("open"));

        let (ok, printed, errors) =
            fulfilld(&database.url, stripe.url(), &["reconcile", "--since", "1h"]).await;
        assert!(ok, "{printed}{errors}");
        assert!(printed.contains("carried out 4 events"), "{printed}");
        assert!(
            printed.contains(&format!("{silent}: fulfilled")),
            "{printed}"
        );

        let mut fulfilled = missed.clone();
        fulfilled.push(silent.clone());
        assert_each_fulfilled_once(&database.url, &fulfilled).await;
        let db = Database::connect(&DatabaseUrl::parse(&database.url).unwrap())
            .await
            .unwrap();
        wait_for_status(&db, &failed, Status::PaymentFailed).await;
        let open_id = SessionId::parse(&open).unwrap();
        assert_eq!(db.outcome(&open_id).await.unwrap(), None, "{backend:?}");

        let (ok, printed, _) =
            fulfilld(&database.url, stripe.url(), &["reconcile", "--since", "1h"]).await;
        assert!(ok);
        assert!(printed.contains("carried out 0 events"), "{printed}");
        assert!(printed.contains("nothing to do"), "{printed}");
        assert_each_fulfilled_once(&database.url, &fulfilled).await;

        let (_, _, warned) = fulfilld(
            &database.url,
            stripe.url(),
            &["reconcile", "--since", "45d"],
        )
        .await;
        assert!(warned.contains("30 days"), "{warned}");
    }
}

#[actix_web::test]
async fn stored_events_replay_and_sessions_show_what_was_recorded() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let session = stripe.add_session(
            SessionSpec::paid(&[("T-shirt", 2500, 2)])
                .with_prices(&["price_tee_m"])
                .with_shipping("Jenny Rosen", "1 Main St", "Springfield", "97477", "US"),
        );
        stripe.drop_webhooks(true);
        let event = stripe.emit("checkout.session.completed", &session).await;
        let (ok, printed, errors) = fulfilld(
            &database.url,
            stripe.url(),
            &["reconcile", "--since", "10m"],
        )
        .await;
        assert!(ok, "{printed}{errors}");

        let (ok, replayed, errors) =
            fulfilld(&database.url, stripe.url(), &["events", "replay", &event]).await;
        assert!(ok, "{errors}");
        assert_eq!(
            replayed.trim(),
            format!("{event} (checkout.session.completed): {session} is fulfilled")
        );
        let (ok, _, errors) = fulfilld(
            &database.url,
            stripe.url(),
            &["events", "replay", "evt_unknown"],
        )
        .await;
        assert!(!ok);
        assert!(errors.contains("no stored event evt_unknown"), "{errors}");

        let (ok, shown, errors) =
            fulfilld(&database.url, stripe.url(), &["sessions", "show", &session]).await;
        assert!(ok, "{errors}");
        for expected in [
            format!("{session}: fulfilled"),
            "total: USD 50.00".to_owned(),
            "2 x T-shirt".to_owned(),
            "shipment: pending (2 x TEE-M)".to_owned(),
            "receipt: pending".to_owned(),
            "inventory: pending".to_owned(),
        ] {
            assert!(
                shown.contains(&expected),
                "{expected:?} missing from {shown}"
            );
        }
        assert_each_fulfilled_once_with_shipment(&database.url, &session).await;
    }
}

/// The session's effects are exactly one receipt, one inventory and one shipment.
async fn assert_each_fulfilled_once_with_shipment(database_url: &str, session: &str) {
    let db = Database::connect(&DatabaseUrl::parse(database_url).unwrap())
        .await
        .unwrap();
    let kinds: Vec<_> = db
        .effects_of(&SessionId::parse(session).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EffectKind::Receipt,
            EffectKind::Inventory,
            EffectKind::Shipment
        ]
    );
}

#[actix_web::test]
async fn serve_reconciles_on_its_schedule_without_any_webhook() {
    for backend in backends() {
        let app = crate::helpers::spawn_app_with(&backend, |settings| {
            settings.reconcile_every = std::time::Duration::from_secs(1);
        })
        .await;
        app.stripe.drop_webhooks(true);
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Sextant", 12000, 1)]));
        app.stripe
            .emit("checkout.session.completed", &session)
            .await;

        let outcome = app.wait_for(&session, Status::Fulfilled).await;
        assert_eq!(outcome.amount_total, Some(12000), "{}", app.backend);
        assert_eq!(app.effect_kinds(&session).await, ["receipt"]);
    }
}

#[actix_web::test]
async fn reconcile_applies_a_refund_whose_webhooks_never_arrived_once() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let session = stripe.add_session(SessionSpec::paid(&[("Print", 900, 1)]));
        let (ok, _, stderr) = fulfilld(&database.url, stripe.url(), &["fulfill", &session]).await;
        assert!(ok, "{stderr}");
        // The endpoint is down: the refund is made at Stripe; its events never arrive.
        stripe.drop_webhooks(true);
        let refund = ["sessions", "refund", &session];
        let (ok, _, stderr) = fulfilld(&database.url, stripe.url(), &refund).await;
        assert!(ok, "{stderr}");
        let url = DatabaseUrl::parse(&database.url).expect("database URL");
        let db = Database::connect(&url).await.expect("database answers");
        let id = SessionId::parse(&session).expect("id");
        let outcome = db.outcome(&id).await.expect("db").expect("recorded");
        assert_eq!(outcome.status, Status::Fulfilled, "nothing arrived yet");

        for _ in 0..2 {
            let run = ["reconcile", "--since", "1h"];
            let (ok, _, stderr) = fulfilld(&database.url, stripe.url(), &run).await;
            assert!(ok, "{stderr}");
            let outcome = db.outcome(&id).await.expect("db").expect("recorded");
            assert_eq!(
                (outcome.status, outcome.amount_refunded),
                (Status::Refunded, 900),
                "on {backend:?}"
            );
            let kinds: Vec<_> = db
                .effects_of(&id)
                .await
                .expect("db")
                .into_iter()
                .map(|(kind, _)| kind)
                .collect();
            assert_eq!(kinds, [EffectKind::Receipt, EffectKind::RefundEmail]);
        }
    }
}
