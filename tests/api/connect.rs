//! Stripe Connect: a connected account's events are fulfilled against that account.

use fulfilld::domain::Status;
use fulfilld::sandbox::SessionSpec;

use crate::helpers::{backends, spawn_app};

const ACCOUNTS: [&str; 3] = ["acct_1NorthShop", "acct_1SouthShop", "acct_1EastShop"];

#[actix_web::test]
async fn connected_accounts_events_interleave_and_each_is_fulfilled_on_its_account() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        // Ten sessions on each of three connected accounts, and ten of the platform's own.
        let mut sessions = Vec::new();
        for n in 0..10 {
            for account in ACCOUNTS.iter().map(Some).chain([None]) {
                let mut spec = SessionSpec::paid(&[("Print", 1000 + n, 1), ("Frame", 500, 2)]);
                if let Some(account) = account {
                    spec = spec.on_account(account);
                }
                sessions.push((app.stripe.add_session(spec), account.copied()));
            }
        }
        fastrand::shuffle(&mut sessions);

        // Every event twice, all at once, the accounts' interleaved.
        let (app, count) = (&app, sessions.len());
        let deliveries =
            sessions
                .iter()
                .chain(&sessions)
                .enumerate()
                .map(|(n, (session, _))| async move {
                    let event = format!("evt_connect_{}", n % count);
                    app.deliver(&event, "checkout.session.completed", session)
                        .await
                        .status()
                        .as_u16()
                });
        let statuses = futures_util::future::join_all(deliveries).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

        for (session, account) in &sessions {
            let outcome = app.wait_for(session, Status::Fulfilled).await;
            assert_eq!(outcome.account.as_deref(), *account, "{}", app.backend);
            assert_eq!(outcome.line_items.len(), 2, "{session} on {}", app.backend);
            assert_eq!(app.stripe.calls(session), 1, "{session} on {}", app.backend);
            assert_eq!(app.effect_kinds(session).await, ["receipt"]);
        }

        // The JSON and the CLI name the account.
        let (session, account) = sessions
            .iter()
            .find(|(_, account)| account.is_some())
            .expect("a connected session");
        let json: serde_json::Value = app
            .get(&format!("/api/checkout-sessions/{session}"))
            .await
            .json()
            .await
            .expect("JSON outcome");
        assert_eq!(json["account"], account.unwrap_or_default(), "{json}");
        let shown = app.cli(&["sessions", "show", session]).await;
        assert!(
            shown.contains(&format!("account: {}", account.unwrap_or_default())),
            "{shown}"
        );
    }
}

#[actix_web::test]
async fn a_delayed_payment_on_a_connected_account_is_checked_on_that_account() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app.stripe.add_session(
            SessionSpec::paid(&[("Print", 4000, 1)])
                .with_payment_status("unpaid")
                .on_account(ACCOUNTS[0]),
        );
        app.deliver("evt_unpaid", "checkout.session.completed", &session)
            .await;
        let awaiting = app.wait_for(&session, Status::AwaitingPayment).await;
        assert_eq!(awaiting.account.as_deref(), Some(ACCOUNTS[0]));

        // The payment clears; the operator asks before any event says so. Nothing signed
        // comes with the request: the stored record names the account to ask.
        app.stripe.set_payment_status(&session, "paid");
        let printed = app.cli(&["fulfill", &session]).await;
        assert!(printed.contains("fulfilled"), "{printed}");
        let outcome = app.wait_for(&session, Status::Fulfilled).await;
        assert_eq!(outcome.account.as_deref(), Some(ACCOUNTS[0]));
        assert_eq!(outcome.line_items.len(), 1, "{}", app.backend);
    }
}

#[actix_web::test]
async fn an_event_naming_a_malformed_account_is_refused_and_changes_nothing() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Print", 1000, 1)]));
        let mut body: serde_json::Value = serde_json::from_str(&app.stripe.event_payload(
            "evt_bad_account",
            "checkout.session.completed",
            &session,
        ))
        .expect("event JSON");
        body["account"] = "acct_1<script>".into();
        let body = body.to_string();
        let signature = crate::helpers::sign(&body);
        let response = app.post_webhook(body, Some(signature)).await;
        assert_eq!(response.status(), 400, "{}", app.backend);
        assert_eq!(app.outcome(&session).await, None);
        assert_eq!(app.stripe.calls(&session), 0);
    }
}

#[actix_web::test]
async fn a_customer_who_arrives_before_the_connected_accounts_event_sees_the_order_once_it_comes() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Print", 2500, 1)]).on_account(ACCOUNTS[1]));
        let page = format!("/after-checkout?session_id={session}");

        // Nothing says which account yet: the platform does not know the session.
        assert_eq!(app.get(&page).await.status(), 404, "{}", app.backend);

        app.deliver("evt_late", "checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::Fulfilled).await;
        let response = app.get(&page).await;
        assert_eq!(response.status(), 200, "{}", app.backend);
        let body = response.text().await.expect("page");
        assert!(body.contains("$25.00"), "{body}");
    }
}

#[actix_web::test]
async fn reconcile_finds_what_no_webhook_delivered_on_the_accounts_seen_and_named() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let [seen, named, unknown] = ACCOUNTS;
        let on = |account: &str| SessionSpec::paid(&[("Print", 1500, 1)]).on_account(account);
        // A webhook from `seen` makes it an account fulfilld knows.
        let delivered = app.stripe.add_session(on(seen));
        app.deliver(
            &format!("evt_{delivered}"),
            "checkout.session.completed",
            &delivered,
        )
        .await;
        app.wait_for(&delivered, Status::Fulfilled).await;
        // Paid with no webhook: on the account seen, on the one named, on neither.
        let missed_seen = app.stripe.add_session(on(seen));
        let missed_named = app.stripe.add_session(on(named));
        let missed_unknown = app.stripe.add_session(on(unknown));

        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
            .args(["reconcile", "--since", "1h"])
            .env("DATABASE_URL", app.database_url())
            .env("STRIPE_SECRET_KEY", crate::helpers::STRIPE_SECRET_KEY)
            .env("STRIPE_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET)
            .env("STRIPE_API_BASE", app.stripe.url())
            .env("STRIPE_MAX_RPS", "1000")
            .env("STRIPE_ACCOUNTS", named)
            .env("RUST_LOG", "off")
            .output()
            .await
            .expect("fulfilld runs");
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");

        for (session, account) in [(&missed_seen, seen), (&missed_named, named)] {
            let outcome = app.wait_for(session, Status::Fulfilled).await;
            assert_eq!(outcome.account.as_deref(), Some(account), "{said}");
            assert!(said.contains(session.as_str()), "{said}");
        }
        // Nothing tells fulfilld of an account it has neither seen nor been given.
        assert!(app.outcome(&missed_unknown).await.is_none(), "{said}");
        assert_eq!(app.stripe.calls(&missed_unknown), 0);
    }
}
