use std::time::Duration;

use fulfilld::db::{Database, DatabaseUrl};
use fulfilld::domain::SessionId;
use fulfilld::sandbox::{SessionSpec, StripeDouble};
use futures_util::future::join_all;

use crate::helpers::{
    Process, STRIPE_SECRET_KEY, WEBHOOK_SECRET, assert_each_fulfilled_once, backends, deliver_each,
    post_webhook, sign,
};
use crate::smtp::SmtpServer;

#[actix_web::test]
async fn two_processes_on_one_database_fulfil_each_session_once() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let first = Process::start(&database.url, stripe.url()).await;
        let second = Process::start(&database.url, stripe.url()).await;
        let sessions: Vec<String> = (0..10)
            .map(|n| stripe.add_session(SessionSpec::paid(&[("Book", 1000 + n, 1)])))
            .collect();
        let client = reqwest::Client::new();

        let deliveries = sessions.iter().enumerate().flat_map(|(n, session)| {
            let body = stripe.event_payload(
                &format!("evt_two_{n}"),
                "checkout.session.completed",
                session,
            );
            [&first, &second, &first, &second].map(|process| {
                let (client, body) = (&client, body.clone());
                async move {
                    let signature = sign(&body);
                    post_webhook(client, &process.address, body, Some(signature))
                        .await
                        .status()
                        .as_u16()
                }
            })
        });
        let statuses = join_all(deliveries).await;

        assert!(
            statuses.iter().all(|status| *status == 200),
            "{statuses:?} on {backend:?}"
        );
        assert_each_fulfilled_once(&database.url, &sessions).await;
    }
}

#[actix_web::test]
async fn acknowledged_events_are_fulfilled_after_a_kill_9() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let process = Process::start(&database.url, stripe.url()).await;
        // Stripe hangs: every acknowledged event is still unprocessed when the process dies.
        stripe.set_delay(Duration::from_secs(60));
        let sessions: Vec<String> = (0..20)
            .map(|n| stripe.add_session(SessionSpec::paid(&[("Print", 500 + n, 1)])))
            .collect();
        deliver_each(&stripe, &process, &sessions).await;
        let db = Database::connect(&DatabaseUrl::parse(&database.url).expect("url"))
            .await
            .expect("db");
        for session in &sessions {
            let outcome = db
                .outcome(&SessionId::parse(session).expect("id"))
                .await
                .expect("db");
            assert_eq!(outcome, None, "fulfilled before the kill on {backend:?}");
        }

        process.kill_9();
        stripe.set_delay(Duration::ZERO);
        let _restarted = Process::start(&database.url, stripe.url()).await;

        assert_each_fulfilled_once(&database.url, &sessions).await;
    }
}

#[actix_web::test]
async fn logs_never_show_secrets_or_customer_emails() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let log_dir = tempfile::tempdir().expect("temporary directory");
        let log = log_dir.path().join("fulfilld.log");
        let smtp = SmtpServer::start();
        let env = [("SMTP_URL", smtp.url())];
        let process = Process::start_logging(&database.url, stripe.url(), &env, &log).await;
        let session = stripe.add_session(SessionSpec::paid(&[("Scarf", 2200, 1)]));
        let client = reqwest::Client::new();

        let body = stripe.event_payload("evt_logged", "checkout.session.completed", &session);
        let signature = sign(&body);
        let forged = signature.replace("v1=", "v1=00");
        assert_eq!(
            post_webhook(&client, &process.address, body.clone(), Some(forged))
                .await
                .status(),
            400
        );
        assert_eq!(
            post_webhook(&client, &process.address, body, Some(signature))
                .await
                .status(),
            200
        );
        assert_each_fulfilled_once(&database.url, std::slice::from_ref(&session)).await;
        let page = client
            .get(format!(
                "{}/after-checkout?session_id={session}",
                process.address
            ))
            .send()
            .await
            .expect("landing page");
        assert_eq!(page.status(), 200);
        // The receipt went out by SMTP, to the address the log must not show.
        assert_eq!(smtp.wait_for(1).await[0].to, ["customer@example.com"]);
        process.kill_9();

        let logged = std::fs::read_to_string(&log).expect("log written");
        assert!(
            logged.contains(&session),
            "the log shows the work: {logged}"
        );
        for secret in [STRIPE_SECRET_KEY, WEBHOOK_SECRET, "customer@example.com"] {
            assert!(
                !logged.contains(secret),
                "{secret} appears in the log on {backend:?}"
            );
        }
    }
}

#[actix_web::test]
async fn the_cli_migrates_and_fulfils_one_session_through_the_actor_path() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let session =
            stripe.add_session(SessionSpec::paid(&[("Tent", 25000, 1), ("Pegs", 500, 4)]));
        let cli = |args: &[&str]| {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"));
            command
                .args(args)
                .env("DATABASE_URL", &database.url)
                .env("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY)
                .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
                .env("STRIPE_API_BASE", stripe.url())
                .env("RUST_LOG", "off");
            command
        };

        let migrated = cli(&["migrate"]).output().await.expect("migrate runs");
        assert!(migrated.status.success(), "{migrated:?}");
        let fulfilled = cli(&["fulfill", &session])
            .output()
            .await
            .expect("fulfill runs");
        let refused = cli(&["fulfill", "pi_123"])
            .output()
            .await
            .expect("fulfill runs");

        assert!(fulfilled.status.success(), "{fulfilled:?}");
        let printed = String::from_utf8_lossy(&fulfilled.stdout);
        assert_eq!(
            printed.trim(),
            format!("{session}: fulfilled (2 line items, USD 270.00)")
        );
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("starts with cs_test_ or cs_live_")
        );
        assert_each_fulfilled_once(&database.url, std::slice::from_ref(&session)).await;
    }
}

#[tokio::test]
async fn a_malformed_setting_stops_start_up_with_one_line_naming_it() {
    let start = |name: &str, value: &str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"));
        command
            .arg("migrate")
            .env("DATABASE_URL", "sqlite::memory:")
            .env("STRIPE_SECRET_KEY", "sk_test_never_printed_4242")
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env(name, value)
            .env("RUST_LOG", "off");
        command.output()
    };
    for (name, value) in [
        ("STRIPE_MAX_RPS", "lots"),
        ("STRIPE_MAX_RPS", "0"),
        ("STRIPE_INTERACTIVE_SHARE", "101"),
        ("EFFECT_LEASE_SECS", "-1"),
        ("RECONCILE_EVERY", "soon"),
        ("RECONCILE_EVERY", "500ms"),
        // Shorter than Stripe retries a delivery: a late retry would be stored again.
        ("EVENT_RETENTION", "1d"),
        ("SEND_RECEIPTS", "perhaps"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("BIND", "localhost"),
        ("LOCALE", "en_US"),
        ("LOCALE", "tlh-QO"),
    ] {
        let refused = start(name, value).await.expect("fulfilld runs");
        assert!(!refused.status.success(), "{name}={value} was taken");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(said.trim().lines().count(), 1, "{said}");
        assert!(
            said.contains("configuration error") && said.contains(name),
            "{said}"
        );
        assert!(!said.contains("never_printed"), "{said}");
    }
}
