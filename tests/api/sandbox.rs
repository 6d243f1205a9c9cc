//! Sandbox mode, driven like a browser: the storefront, the simulator's hosted checkout,
//! its signed webhooks and the landing page, all from one fulfilld with no Stripe key.

use std::time::{Duration, Instant};

use fulfilld::domain::Status;

use crate::helpers::{Backend, TestApp, backends, free_port, no_redirects, spawn_app_with};

/// A fulfilld in sandbox mode: no key, so it mounts the simulator under `/sandbox`.
async fn spawn_sandbox(backend: &Backend) -> TestApp {
    let port = free_port();
    spawn_app_with(backend, |settings| {
        settings.stripe_secret_key = None;
        settings.stripe_webhook_secret = None;
        settings.bind = format!("127.0.0.1:{port}").parse().expect("address");
        settings.public_url = format!("http://127.0.0.1:{port}");
    })
    .await
}

fn location(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), 303, "{response:?}");
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Buys `quantity` of `price` through the storefront and pays with `method` on the hosted
/// page; returns the session id and where the browser was sent.
async fn buy(app: &TestApp, price: &str, quantity: u32, method: &str) -> (String, String) {
    let browser = no_redirects();
    let shop = browser
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(shop.status(), 200);
    assert!(shop.text().await.unwrap().contains(price));

    let created = browser
        .post(format!("{}/checkout", app.address))
        .form(&[("price", price), ("quantity", &quantity.to_string())])
        .send()
        .await
        .unwrap();
    let hosted = location(&created);
    assert!(
        hosted.starts_with(&format!("{}/sandbox/checkout/cs_test_", app.address)),
        "{hosted}"
    );
    let session = hosted.rsplit('/').next().unwrap().to_owned();

    let page = browser.get(&hosted).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Pay by card"));
    let paid = browser
        .post(format!("{hosted}/pay"))
        .form(&[
            ("method", method),
            ("email", "jenny.rosen@example.com"),
            ("name", "Jenny Rosen"),
            ("line1", "1 Main Street"),
            ("city", "Springfield"),
            ("postal_code", "97477"),
            ("country", "US"),
        ])
        .send()
        .await
        .unwrap();
    (session, location(&paid))
}

async fn landing(app: &TestApp, url: &str) -> String {
    assert!(
        url.starts_with(&format!("{}/after-checkout?session_id=", app.address)),
        "{url}"
    );
    let page = no_redirects().get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

async fn wait_for_mail(app: &TestApp, name: &str) -> String {
    let path = app.mail_dir.path().join(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mail) = std::fs::read_to_string(&path) {
            return mail;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never arrived: {:?}",
            app.mail_files()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[actix_web::test]
async fn a_card_payment_lands_on_the_fulfilled_page_with_a_receipt_and_less_stock() {
    for backend in backends() {
        let app = spawn_sandbox(&backend).await;
        let (session, next) = buy(&app, "price_tee_m", 2, "card").await;

        let page = landing(&app, &next).await;
        assert!(page.contains("Thank you for your order"), "{page}");
        assert!(page.contains("1 Main Street"), "{page}");
        let receipt = wait_for_mail(&app, &format!("{session}.receipt.eml")).await;
        assert!(receipt.contains("$50.00"), "{receipt}");
        assert!(receipt.contains("To: jenny.rosen@example.com"), "{receipt}");
        app.wait_for_effects(&session).await;
        assert_eq!(
            app.db.stock("TEE-M").await.unwrap(),
            Some((23, false)),
            "{}",
            app.backend
        );
        let shop = no_redirects()
            .get(format!("{}/", app.address))
            .send()
            .await
            .unwrap();
        assert!(shop.text().await.unwrap().contains("23 in stock"));
    }
}

#[actix_web::test]
async fn a_bank_debit_that_clears_later_is_fulfilled_when_it_clears() {
    for backend in backends() {
        let app = spawn_sandbox(&backend).await;
        let (session, next) = buy(&app, "price_mug", 1, "debit_succeeds").await;

        let page = landing(&app, &next).await;
        assert!(page.contains("Payment processing"), "{page}");
        assert!(app.mail_files().is_empty());
        app.wait_for(&session, Status::Fulfilled).await;
        let receipt = wait_for_mail(&app, &format!("{session}.receipt.eml")).await;
        assert!(receipt.contains("$12.00"), "{receipt}");
        app.wait_for_effects(&session).await;
        assert_eq!(app.db.stock("MUG").await.unwrap(), Some((9, false)));
        assert!(
            landing(&app, &next)
                .await
                .contains("Thank you for your order")
        );
    }
}

#[actix_web::test]
async fn a_bank_debit_that_fails_sends_one_notice_and_moves_no_stock() {
    for backend in backends() {
        let app = spawn_sandbox(&backend).await;
        let (session, next) = buy(&app, "price_mug", 3, "debit_fails").await;

        assert!(landing(&app, &next).await.contains("Payment processing"));
        app.wait_for(&session, Status::PaymentFailed).await;
        let notice = wait_for_mail(&app, &format!("{session}.payment_failed_email.eml")).await;
        assert!(notice.contains("did not go through"), "{notice}");
        app.wait_for_effects(&session).await;
        assert_eq!(
            app.mail_files(),
            [format!("{session}.payment_failed_email.eml")]
        );
        assert_eq!(app.db.stock("MUG").await.unwrap(), Some((10, false)));
        let page = landing(&app, &next).await;
        assert!(page.contains("Payment failed"), "{page}");
    }
}

#[actix_web::test]
async fn an_abandoned_checkout_expires_and_returns_to_the_shop() {
    for backend in backends() {
        let app = spawn_sandbox(&backend).await;
        let browser = no_redirects();
        let created = browser
            .post(format!("{}/checkout", app.address))
            .form(&[("price", "price_ebook"), ("quantity", "1")])
            .send()
            .await
            .unwrap();
        let hosted = location(&created);
        let session = hosted.rsplit('/').next().unwrap().to_owned();

        let expired = browser
            .post(format!("{hosted}/expire"))
            .send()
            .await
            .unwrap();
        assert_eq!(location(&expired), format!("{}/", app.address));
        app.wait_for(&session, Status::Expired).await;
        assert!(app.effect_kinds(&session).await.is_empty());
    }
}

#[actix_web::test]
async fn the_storefront_refuses_unknown_products_and_silly_quantities() {
    for backend in backends() {
        let app = spawn_sandbox(&backend).await;
        for (price, quantity) in [
            ("price_nope", "1"),
            ("price_tee_m", "0"),
            ("price_tee_m", "many"),
        ] {
            let response = no_redirects()
                .post(format!("{}/checkout", app.address))
                .form(&[("price", price), ("quantity", quantity)])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{price} x {quantity}");
            assert!(response.text().await.unwrap().contains("role=\"alert\""));
        }
    }
}

#[actix_web::test]
async fn the_simulator_takes_only_its_own_key_and_sends_customers_only_under_public_url() {
    for backend in backends() {
        let app = spawn_sandbox(&backend).await;
        let api = format!("{}/sandbox/v1/checkout/sessions", app.address);
        let key = app.db.sandbox_key("sk_test_unused").await.expect("db");
        assert_ne!(key, "sk_test_unused", "made by the serving process");
        let list = |key: String| {
            let api = api.clone();
            async move {
                let response = no_redirects()
                    .get(&api)
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let sessions = response.json::<serde_json::Value>().await.unwrap()["data"]
                    .as_array()
                    .map_or(0, Vec::len);
                (status, sessions)
            }
        };
        for other in ["sk_test_sandbox", "sk_test_made_up", "rk_test_x"] {
            assert_eq!(list(other.to_owned()).await.0, 401, "{other}");
        }
        let (status, before) = list(key.clone()).await;
        assert_eq!(status, 200);

        let public = &app.address;
        for elsewhere in [
            "https://evil.example/after-checkout".to_owned(),
            format!("{public}@evil.example/after-checkout"),
            format!("{public}.evil.example/"),
        ] {
            let created = no_redirects()
                .post(&api)
                .bearer_auth(&key)
                .form(&[
                    ("mode", "payment"),
                    ("line_items[0][price]", "price_tee_m"),
                    ("success_url", &format!("{public}/after-checkout")),
                    ("cancel_url", &elsewhere),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 400, "{elsewhere}");
            let error = created.json::<serde_json::Value>().await.unwrap();
            assert_eq!(error["error"]["code"], "url_invalid", "{error}");
        }
        assert_eq!(
            list(key.clone()).await,
            (200, before),
            "nothing was created"
        );

        // The storefront's own URLs are under PUBLIC_URL: buying still works.
        let (_, landed) = buy(&app, "price_tee_m", 1, "card").await;
        assert!(
            landing(&app, &landed)
                .await
                .contains("Thank you for your order")
        );
    }
}

/// The fulfilld binary with no Stripe key, listening on every interface.
fn keyless_on_every_interface(port: u16, database: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"));
    command
        .env_remove("STRIPE_SECRET_KEY")
        .env("BIND", format!("0.0.0.0:{port}"))
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "off")
        .kill_on_drop(true);
    command
}

#[actix_web::test]
async fn without_a_key_a_public_bind_refuses_to_start_unless_sandbox_is_asked_for() {
    for backend in backends() {
        let database = backend.fresh_database().await;
        let port = free_port();

        let refused = keyless_on_every_interface(port, &database.url)
            .output()
            .await
            .expect("fulfilld runs");
        assert!(!refused.status.success(), "{refused:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(said.contains("STRIPE_SECRET_KEY"), "{said}");
        assert!(said.contains("SANDBOX=1"), "{said}");

        // Anyone could pay it there: nothing it fulfils may reach real mail or a warehouse.
        for real in ["SMTP_URL", "SHIPPING_WEBHOOK_URL", "ACCESS_WEBHOOK_URL"] {
            let value = match real {
                "SMTP_URL" => "smtp://mail.example.com:587",
                _ => "https://warehouse.example.com/hook",
            };
            let refused = keyless_on_every_interface(port, &database.url)
                .env("SANDBOX", "1")
                .env(real, value)
                .output()
                .await
                .expect("fulfilld runs");
            assert!(!refused.status.success(), "{refused:?}");
            let said = String::from_utf8_lossy(&refused.stderr);
            assert_eq!(said.lines().count(), 1, "{said}");
            assert!(said.contains(real) && said.contains("SANDBOX=1"), "{said}");
        }

        let mut asked = keyless_on_every_interface(port, &database.url)
            .env("SANDBOX", "1")
            .spawn()
            .expect("fulfilld starts");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!(
                    "http://127.0.0.1:{port}/sandbox/checkout/cs_test_none"
                ))
                .send()
                .await;
            if let Ok(response) = ready {
                // The simulator is mounted: it answers for its own (unknown) sessions.
                assert_eq!(response.status(), 404, "{backend:?}");
                break;
            }
            assert!(Instant::now() < deadline, "sandbox did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        asked.kill().await.expect("stopped");
    }
}
