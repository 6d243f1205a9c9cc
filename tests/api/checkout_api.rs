//! `POST /api/checkout-sessions`: sessions for the merchant's own front end, with the
//! storefront's checks, holds and pacing, for the token's holder or the shop's own pages.

use serde_json::{Value, json};

use fulfilld::configuration::CheckoutUi;

use crate::helpers::{TestApp, backends, no_redirects, spawn_app_with};

pub(crate) const TOKEN: &str = "a-token-of-thirty-two-characters-at-least";

pub(crate) async fn api_app(backend: &crate::helpers::Backend, per_minute: u32) -> TestApp {
    spawn_app_with(backend, |settings| {
        settings.checkout.api_token = Some(TOKEN.into());
        settings.client_lookups_per_min = per_minute;
    })
    .await
}

pub(crate) async fn post(app: &TestApp, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/api/checkout-sessions", app.address))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("fulfilld answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn the_token_holder_gets_a_session_that_holds_its_goods_until_it_expires() {
    for backend in backends() {
        let app = api_app(&backend, 100).await;
        let body = json!({
            "line_items": [{"price": "price_mug", "quantity": 2}, {"price": "price_ebook", "quantity": 1}],
            "email": "jenny.rosen@example.com"
        });
        let before = fulfilld::db::now_ms() / 1000;
        let (status, created) = post(&app, Some(TOKEN), &body.to_string()).await;

        assert_eq!(status, 201, "{created} on {}", app.backend);
        let id = created["id"].as_str().unwrap();
        assert!(id.starts_with("cs_test_"), "{created}");
        assert!(created["url"].as_str().unwrap().contains(id), "{created}");
        assert_eq!(app.db.held("MUG").await.unwrap(), 2);
        assert_eq!(app.db.available("MUG").await.unwrap(), 8);
        let session = app.stripe.session_object(id).expect("created at Stripe");
        assert_eq!(session["customer_email"], "jenny.rosen@example.com");
        let expires_at = session["expires_at"].as_i64().unwrap();
        // RESERVATION_MINUTES=30 is Stripe's least; three minutes more leave room for
        // the pacer's wait, a retry and clocks that disagree.
        assert!(
            (before + 1980..=before + 1985).contains(&expires_at),
            "{expires_at}"
        );
        assert_eq!(created["expires_at"], expires_at);
        assert!(
            session["metadata"]["fulfilld_reservation"]
                .as_str()
                .is_some_and(|id| id.starts_with("res_")),
            "{session}"
        );
    }
}

#[actix_web::test]
async fn bad_input_is_refused_naming_the_field_and_holds_nothing() {
    for backend in backends() {
        let app = api_app(&backend, 100).await;
        let mug = r#"{"price": "price_mug", "quantity": 1}"#;
        let cases = [
            ("not json", "body"),
            ("[]", "body"),
            ("{}", "line_items"),
            (r#"{"line_items": []}"#, "line_items"),
            (r#"{"line_items": {}}"#, "line_items"),
            (
                r#"{"line_items": [{"price": "price_mug"}]}"#,
                "line_items[0].quantity",
            ),
            (
                r#"{"line_items": [{"price": "price_mug", "quantity": 0}]}"#,
                "line_items[0].quantity",
            ),
            (
                r#"{"line_items": [{"price": "price_mug", "quantity": 1.5}]}"#,
                "line_items[0].quantity",
            ),
            (
                r#"{"line_items": [{"price": "price_mug", "quantity": 21}]}"#,
                "line_items[0].quantity",
            ),
            (
                r#"{"line_items": [{"price": "price_mug", "quantity": -1}]}"#,
                "line_items[0].quantity",
            ),
            (
                r#"{"line_items": [{"quantity": 1}]}"#,
                "line_items[0].price",
            ),
            (
                r#"{"line_items": [{"price": "price_nope", "quantity": 1}]}"#,
                "line_items[0].price",
            ),
            (
                r#"{"line_items": [{"price": "price_mug", "quantity": 1, "discount": 5}]}"#,
                "line_items[0].discount",
            ),
            (
                &format!(r#"{{"line_items": [{mug}], "email": "nope"}}"#),
                "email",
            ),
            (
                &format!(r#"{{"line_items": [{mug}], "email": 7}}"#),
                "email",
            ),
            (
                &format!(r#"{{"line_items": [{mug}], "email": "jenny@localhost"}}"#),
                "email",
            ),
            (
                &format!(r#"{{"line_items": [{mug}], "coupon": "FREE"}}"#),
                "coupon",
            ),
            (
                &format!(r#"{{"line_items": [{}]}}"#, vec![mug; 21].join(",")),
                "line_items",
            ),
        ];
        for (body, field) in cases {
            let (status, answer) = post(&app, Some(TOKEN), body).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_request", "{body}");
        }
        assert_eq!(app.db.held("MUG").await.unwrap(), 0);
        assert_eq!(app.stripe.total_calls(), 0);
    }
}

#[actix_web::test]
async fn without_the_token_or_the_shops_own_csrf_token_nothing_is_created() {
    for backend in backends() {
        let app = api_app(&backend, 100).await;
        let body = json!({"line_items": [{"price": "price_mug", "quantity": 1}]}).to_string();
        for token in [None, Some("wrong"), Some(&TOKEN[1..])] {
            let response = app
                .client
                .post(format!("{}/api/checkout-sessions", app.address))
                .header(
                    "authorization",
                    token.map(|t| format!("Bearer {t}")).unwrap_or_default(),
                )
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }

        // The shop's page gives its visitor a CSRF cookie and repeats it in the page.
        let shop = app
            .client
            .get(format!("{}/", app.address))
            .send()
            .await
            .unwrap();
        let cookie = csrf_cookie(&shop);
        let page = shop.text().await.unwrap();
        assert!(page.contains(&format!(r#"<meta name="csrf-token" content="{cookie}">"#)));
        let from = |origin: &str, header: &str| {
            app.client
                .post(format!("{}/api/checkout-sessions", app.address))
                .header("origin", origin)
                .header("cookie", format!("fulfilld_csrf={cookie}"))
                .header("x-csrf-token", header)
                .body(body.clone())
                .send()
        };
        // Another site, or the shop without the page's token: refused.
        assert_eq!(
            from("https://evil.example", &cookie)
                .await
                .unwrap()
                .status(),
            401
        );
        assert_eq!(
            from("http://localhost:4242", "0123")
                .await
                .unwrap()
                .status(),
            401
        );
        assert_eq!(app.db.held("MUG").await.unwrap(), 0);
        assert_eq!(app.stripe.total_calls(), 0);
        // The shop's own page, with its token.
        let created = from("http://localhost:4242", &cookie).await.unwrap();
        assert_eq!(created.status(), 201);
        assert_eq!(app.db.held("MUG").await.unwrap(), 1);
    }
}

/// The shop page's CSRF cookie, as a visitor's browser gets it.
async fn visitor_token(app: &TestApp) -> String {
    let shop = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    csrf_cookie(&shop)
}

/// The CSRF cookie the shop's page set.
fn csrf_cookie(shop: &reqwest::Response) -> String {
    shop.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("fulfilld_csrf="))
        .and_then(|value| value.split(';').next())
        .expect("CSRF cookie")
        .to_owned()
}

/// A checkout asked for from the shop's own page, with its CSRF token.
async fn from_the_shop(app: &TestApp, token: &str, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/api/checkout-sessions", app.address))
        .header("origin", "http://localhost:4242")
        .header("cookie", format!("fulfilld_csrf={token}"))
        .header("x-csrf-token", token)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_sold_out_cart_is_a_409_and_a_visitor_past_its_allowance_waits() {
    for backend in backends() {
        // A burst of a quarter of the minute's allowance: three.
        let app = api_app(&backend, 12).await;
        app.execute("UPDATE inventory SET stock = 2 WHERE sku = 'MUG'")
            .await;
        let two = json!({"line_items": [{"price": "price_mug", "quantity": 2}]}).to_string();
        let one = json!({"line_items": [{"price": "price_mug", "quantity": 1}]}).to_string();
        let ebook = json!({"line_items": [{"price": "price_ebook", "quantity": 1}]}).to_string();

        // The merchant's back end: no allowance of its own to spend.
        for _ in 0..4 {
            let (status, _) = post(&app, Some(TOKEN), &ebook).await;
            assert_eq!(status, 201);
        }
        let (status, _) = post(&app, Some(TOKEN), &two).await;
        assert_eq!(status, 201);
        let (status, answer) = post(&app, Some(TOKEN), &one).await;
        assert_eq!(status, 409, "{answer}");
        assert_eq!(answer["error"]["code"], "sold_out");
        assert_eq!(answer["error"]["price"], "price_mug");
        assert_eq!(answer["error"]["available"], 0);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Enamel mug"),
            "{answer}"
        );

        // A visitor: three within the burst, then refused before anything is created.
        let token = visitor_token(&app).await;
        for _ in 0..3 {
            assert_eq!(from_the_shop(&app, &token, &ebook).await.status(), 201);
        }
        let calls = app.stripe.total_calls();
        let refused = from_the_shop(&app, &token, &ebook).await;
        assert_eq!(refused.status(), 429);
        assert!(refused.headers().contains_key("retry-after"));
        assert_eq!(app.stripe.total_calls(), calls);
        assert_eq!(app.db.held("MUG").await.unwrap(), 2);
    }
}

#[actix_web::test]
async fn embedded_mode_answers_a_client_secret_and_the_shop_loads_stripe_js_of_the_pinned_release()
{
    for backend in backends() {
        let app = spawn_app_with(&backend, |settings| {
            settings.checkout.api_token = Some(TOKEN.into());
            settings.checkout.checkout_ui = CheckoutUi::Embedded;
            settings.checkout.stripe_publishable_key = Some("pk_test_shop".into());
        })
        .await;
        let body = json!({"line_items": [{"price": "price_mug", "quantity": 1}]}).to_string();
        let (status, created) = post(&app, Some(TOKEN), &body).await;

        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap();
        let secret = created["client_secret"].as_str().unwrap();
        assert!(secret.starts_with(&format!("{id}_secret_")), "{created}");
        assert!(created.get("url").is_none(), "{created}");
        let session = app.stripe.session_object(id).unwrap();
        // This build pins an API version after 2026-03-25.dahlia.
        assert_eq!(session["ui_mode"], "embedded_page");
        assert_eq!(
            session["return_url"],
            "http://localhost:4242/after-checkout?session_id={CHECKOUT_SESSION_ID}"
        );
        assert_eq!(session["success_url"], Value::Null);
        assert_eq!(session["cancel_url"], Value::Null);
        assert_eq!(app.db.held("MUG").await.unwrap(), 1);

        // The shop's page loads Stripe.js of the pinned API's release, with the key.
        let page = app.get("/").await.text().await.unwrap();
        assert!(
            page.contains(r#"data-publishable-key="pk_test_shop""#),
            "{page}"
        );
        let release = stripe_shared_release();
        assert!(
            page.contains(&format!(
                r#"<script src="https://js.stripe.com/{release}/stripe.js"></script>"#
            )),
            "{page}"
        );
        // The form without scripts still sells: on Stripe's hosted page.
        let hosted = no_redirects()
            .post(format!("{}/checkout", app.address))
            .form(&[("price", "price_mug"), ("quantity", "2")])
            .send()
            .await
            .unwrap();
        assert_eq!(hosted.status(), 303);
        let location = hosted.headers()["location"].to_str().unwrap().to_owned();
        let id = location.rsplit('/').next().unwrap();
        assert_eq!(app.stripe.session_object(id).unwrap()["ui_mode"], "hosted");
        assert_eq!(app.db.held("MUG").await.unwrap(), 3);
    }
}

#[actix_web::test]
async fn a_form_posted_from_another_site_or_repeating_a_line_past_its_limit_holds_nothing() {
    for backend in backends() {
        let app = api_app(&backend, 100).await;
        let forged = app
            .client
            .post(format!("{}/checkout", app.address))
            .header("origin", "https://evil.example")
            .form(&[("price", "price_mug"), ("quantity", "5")])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403);
        // The shop reached by another name than PUBLIC_URL's: its own page still sells.
        let own = no_redirects()
            .post(format!("{}/checkout", app.address))
            .header("origin", &app.address)
            .form(&[("price", "price_ebook"), ("quantity", "1")])
            .send()
            .await
            .unwrap();
        assert_eq!(own.status(), 303);

        let fifteen = r#"{"price": "price_mug", "quantity": 15}"#;
        let (status, answer) = post(
            &app,
            Some(TOKEN),
            &format!(r#"{{"line_items": [{fifteen}, {fifteen}]}}"#),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], "line_items[1].quantity");
        assert_eq!(app.db.held("MUG").await.unwrap(), 0);
    }
}

#[test]
fn settings_that_cannot_make_a_checkout_stop_start_up_naming_the_setting() {
    let settings = || crate::helpers::settings("sqlite://unused.db", "http://127.0.0.1:9");
    let refused =
        |settings: fulfilld::configuration::Settings| settings.validate().unwrap_err().to_string();

    let mut embedded = settings();
    embedded.checkout.checkout_ui = CheckoutUi::Embedded;
    assert!(refused(embedded.clone()).contains("STRIPE_PUBLISHABLE_KEY"));
    embedded.checkout.stripe_publishable_key = Some("pk_live_other_mode".into());
    assert!(refused(embedded.clone()).contains("pk_test_"));
    embedded.checkout.stripe_publishable_key = Some("pk_test_shop".into());
    assert!(embedded.validate().is_ok());

    let mut short = settings();
    short.checkout.api_token = Some("short-token-not-echoed".into());
    let error = refused(short);
    assert!(error.contains("API_TOKEN"), "{error}");
    assert!(!error.contains("short-token-not-echoed"), "{error}");
}

/// The Stripe.js release named by the API version this build pins (`…​.endive`).
fn stripe_shared_release() -> String {
    let pinned = fulfilld::stripe::pinned_api_version();
    pinned.rsplit('.').next().unwrap().to_owned()
}
