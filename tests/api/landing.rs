use fulfilld::domain::{Locale, Status};
use fulfilld::sandbox::SessionSpec;

use crate::helpers::{backends, quoted_printable, spawn_app, spawn_app_with};

#[actix_web::test]
async fn missing_and_malformed_session_ids_get_400() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        for query in [
            "",
            "?session_id=",
            "?session_id=pi_123",
            "?session_id=cs_test_%3Cscript%3E",
            "?other=1",
        ] {
            let response = app.get(&format!("/after-checkout{query}")).await;
            assert_eq!(response.status(), 400, "{query} on {}", app.backend);
            let html = response.text().await.expect("body");
            assert!(html.contains("That link is not complete"), "{html}");
            assert!(!html.contains("<script>"), "{html}");
        }
        let response = app.get("/api/checkout-sessions/not_a_session").await;
        assert_eq!(response.status(), 400);
    }
}

#[actix_web::test]
async fn a_session_stripe_does_not_know_gets_404() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let response = app
            .get("/after-checkout?session_id=cs_test_doesnotexist")
            .await;
        assert_eq!(response.status(), 404, "{}", app.backend);
        assert!(
            response
                .text()
                .await
                .expect("body")
                .contains("We could not find that order")
        );
        let response = app.get("/api/checkout-sessions/cs_test_doesnotexist").await;
        assert_eq!(response.status(), 404);
        assert_eq!(app.outcome("cs_test_doesnotexist").await, None);
    }
}

#[actix_web::test]
async fn the_landing_page_fulfils_and_escapes_product_names() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app.stripe.add_session(SessionSpec::paid(&[
            ("<script>alert('pwned')</script> & <b>bold</b>", 1999, 1),
            ("Plain socks", 500, 3),
        ]));

        let response = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await;

        assert_eq!(response.status(), 200, "{}", app.backend);
        let html = response.text().await.expect("body");
        assert!(html.contains("Thank you for your order"), "{html}");
        assert!(
            html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<b>bold</b>"), "{html}");
        assert!(
            html.contains("$19.99") && html.contains("$15.00") && html.contains("$34.99"),
            "{html}"
        );
        assert_eq!(
            app.outcome(&session).await.map(|o| o.status),
            Some(Status::Fulfilled)
        );
    }
}

#[actix_web::test]
async fn the_json_api_returns_the_same_outcome() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Poster", 1500, 2)]));

        let response = app.get(&format!("/api/checkout-sessions/{session}")).await;

        assert_eq!(response.status(), 200, "{}", app.backend);
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["status"], "fulfilled");
        assert_eq!(body["session_id"], session.as_str());
        assert_eq!(body["line_items"][0]["description"], "Poster");
        assert_eq!(body["line_items"][0]["quantity"], 2);
        assert_eq!(body["amount_total"], 3000);
        assert!(
            body.get("customer_email").is_none(),
            "no email in a public answer"
        );
    }
}

#[actix_web::test]
async fn stripe_being_down_gives_a_friendly_503_and_records_nothing() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Lamp", 4000, 1)]));
        app.stripe.fail_next(100, 503);

        let response = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await;

        assert_eq!(response.status(), 503, "{}", app.backend);
        let html = response.text().await.expect("body");
        assert!(html.contains("We are confirming your order"), "{html}");
        assert!(html.contains(r#"http-equiv="refresh""#), "{html}");
        assert!(
            !html.contains("status 503") && !html.contains("api_error"),
            "{html}"
        );
        assert_eq!(app.outcome(&session).await, None);
    }
}

#[actix_web::test]
async fn a_150_item_cart_is_recorded_and_shown_in_full() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let names: Vec<String> = (1..=150).map(|n| format!("Bolt #{n:03}")).collect();
        let items: Vec<(&str, i64, u64)> =
            names.iter().map(|name| (name.as_str(), 10, 1)).collect();
        let session = app.stripe.add_session(SessionSpec::paid(&items));

        let response = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await;

        assert_eq!(response.status(), 200, "{}", app.backend);
        let html = response.text().await.expect("body");
        for name in &names {
            assert!(
                html.contains(name.as_str()),
                "{name} missing on {}",
                app.backend
            );
        }
        let outcome = app.outcome(&session).await.expect("recorded");
        let stored: Vec<_> = outcome
            .line_items
            .iter()
            .map(|i| i.description.clone())
            .collect();
        assert_eq!(stored, names, "{}", app.backend);
        // The retrieve embeds 10; two pages of 100 bring the other 140.
        assert_eq!(app.stripe.calls(&session), 3);
    }
}

#[actix_web::test]
async fn a_database_outage_gives_503s_and_never_a_false_acknowledgement() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Lamp", 4000, 1)]));
        app.drop_table("webhook_events").await;
        app.drop_table("line_items").await;

        let delivery = app
            .deliver("evt_outage", "checkout.session.completed", &session)
            .await;
        let page = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await;
        let api = app.get(&format!("/api/checkout-sessions/{session}")).await;

        assert_eq!(
            delivery.status(),
            503,
            "Stripe must retry on {}",
            app.backend
        );
        assert_eq!(page.status(), 503, "{}", app.backend);
        let html = page.text().await.expect("body");
        assert!(html.contains("We are confirming your order"), "{html}");
        assert!(
            !html.contains("line_items") && !html.contains("no such table"),
            "{html}"
        );
        assert_eq!(api.status(), 503);
    }
}

#[actix_web::test]
async fn the_landing_page_and_the_receipt_write_money_as_the_locale_does() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |settings| {
            settings.locale.locale = Locale::parse("de-DE").expect("a known locale");
        })
        .await;
        let spec = SessionSpec::paid(&[("Wanderkarte", 123_456, 1), ("Postkarte", 250, 2)]);
        let session = app.stripe.add_session(spec.with_currency("eur"));

        let html = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await
            .text()
            .await
            .expect("body");

        for shown in ["1.234,56\u{a0}€", "5,00\u{a0}€", "1.239,56\u{a0}€"] {
            assert!(
                html.contains(shown),
                "{shown} missing on {}: {html}",
                app.backend
            );
        }
        assert!(!html.contains("EUR"), "{html}");
        app.wait_for_effects(&session).await;
        let receipt =
            std::fs::read_to_string(app.mail_dir.path().join(format!("{session}.receipt.eml")))
                .expect("the receipt is saved");
        let receipt = quoted_printable(&receipt);
        assert!(receipt.contains("1.239,56\u{a0}€"), "{receipt}");
        assert!(!receipt.contains("EUR 1239.56"), "{receipt}");
    }
}
