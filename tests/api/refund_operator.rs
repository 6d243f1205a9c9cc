//! Refunds an operator starts: `fulfilld sessions refund` asks Stripe (here its double,
//! which tells of the refund by webhook like Stripe), and the reversal follows.

use fulfilld::domain::{GrantStatus, Status};

use crate::helpers::{STRIPE_SECRET_KEY, TestApp, WEBHOOK_SECRET, backends};
use crate::refunds::{ebook_and_poster, mails, settled_effects, spawn_shop, wait_for_refunded};
use crate::smtp::SmtpServer;

#[actix_web::test]
async fn refunds_started_from_the_cli_are_made_once_and_reverse_through_stripes_webhooks() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_shop(&backend, &smtp).await;
        app.stripe
            .send_webhooks_to(&format!("{}/webhook", app.address), WEBHOOK_SECRET);
        let session = app.stripe.add_session(ebook_and_poster());
        app.stripe
            .emit("checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::Fulfilled).await;
        assert_eq!(app.wait_for_effects(&session).await, ["receipt"]);

        // Refused, and nothing refunded: items without an amount, an item not bought, no
        // amount at all.
        let refused = [
            (
                vec!["--items", "EBOOK-FULFILL:1"],
                "--items: give an amount too",
            ),
            (
                vec!["--amount", "900", "--items", "MUG:1"],
                "has no MUG; it has EBOOK-FULFILL",
            ),
            (vec!["--amount", "0"], "expected a positive amount"),
        ];
        for (args, says) in refused {
            let error = cli_fails(
                &app,
                &[&["sessions", "refund", &session][..], &args].concat(),
            )
            .await;
            assert!(error.contains(says), "{error}");
        }
        assert!(
            app.stripe
                .events()
                .iter()
                .all(|e| e.event_type != "refund.created")
        );

        // The e-book's 9.00 back; the same command run again refunds nothing more.
        let ebook = [
            "sessions",
            "refund",
            &session,
            "--amount",
            "900",
            "--items",
            "EBOOK-FULFILL:1",
        ];
        let made = app.cli(&ebook).await;
        assert!(made.contains(": refund re_"), "{made}");
        assert!(made.contains("USD 9.00"), "{made}");
        assert_eq!(app.cli(&ebook).await, made, "one refund, answered again");
        assert_eq!(
            wait_for_refunded(&app, &session, 900).await,
            Status::PartiallyRefunded,
            "on {backend:?}"
        );
        let outcome = app.outcome(&session).await.expect("recorded");
        assert_eq!(outcome.access[0].status, GrantStatus::Revoked);

        // The rest: a full refund.
        let rest = app.cli(&["sessions", "refund", &session]).await;
        assert!(rest.contains("USD 11.00"), "{rest}");
        assert_eq!(
            wait_for_refunded(&app, &session, 2000).await,
            Status::Refunded,
            "on {backend:?}"
        );
        let effects = settled_effects(&app, &session).await;
        assert_eq!(effects[1], ("refund_email".into(), "done".into()));
        app.drained().await;
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
    }
}

/// Runs the CLI as [`TestApp::cli`] does, expecting it to fail; returns what it said.
async fn cli_fails(app: &TestApp, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(args)
        .env("DATABASE_URL", app.database_url())
        .env("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY)
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("STRIPE_API_BASE", app.stripe.url())
        .env("RUST_LOG", "off")
        .output()
        .await
        .expect("fulfilld runs");
    assert!(!output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
