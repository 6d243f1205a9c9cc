//! The operators' page: off without ADMIN_TOKEN, signed in by a cookie only the token can
//! make, every change a POST with the cookie's CSRF token; and what it shows and retries.

use std::time::Duration;

use fulfilld::domain::{EffectStatus, ShipmentStatus, Status};
use fulfilld::sandbox::{SessionSpec, StripeDouble};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};

use crate::effects::order;
use crate::helpers::{
    Backend, Process, TestApp, WEBHOOK_SECRET, backends, sign, spawn_app, spawn_app_with,
};
use crate::refunds::{ebook_and_poster, mails, wait_for_refunded};
use crate::smtp::SmtpServer;
use crate::warehouse::Warehouse;

const TOKEN: &str = "correct-horse-battery-staple";

async fn spawn_admin(backend: &Backend) -> TestApp {
    spawn_app_with(backend, |settings| {
        settings.admin_token = Some(TOKEN.into());
    })
    .await
}

/// A browser of the admin page: no redirects followed, one cookie kept by hand.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            app,
            client,
            cookie: None,
        }
    }

    async fn sign_in(app: &'a TestApp) -> Self {
        let mut browser = Self::new(app);
        let response = browser.post("/admin/login", &[("token", TOKEN)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let set = set_cookie(&response).expect("a cookie");
        browser.cookie = Some(set.split(';').next().unwrap().to_owned());
        browser
    }

    async fn get(&self, path: &str) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.app.address));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request sent")
    }

    async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.app.address))
            .form(form);
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request sent")
    }

    /// The sessions page found by searching for `q`.
    async fn search(&self, q: &str) -> String {
        let csrf = self.csrf("/admin").await;
        let response = self
            .post("/admin", &[("csrf", csrf.as_str()), ("q", q)])
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{q}");
        response.text().await.unwrap()
    }

    /// The CSRF token of the forms on `path`.
    async fn csrf(&self, path: &str) -> String {
        let page = self.page(path).await;
        let (_, rest) = page
            .split_once(r#"name="csrf" value=""#)
            .expect("a form with a CSRF token");
        rest.split('"').next().unwrap().to_owned()
    }
}

fn set_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get(SET_COOKIE)
        .map(|value| value.to_str().unwrap().to_owned())
}

fn location(response: &Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// A fulfilled order of a T-shirt and an e-book whose shipment the warehouse refused, so
/// its shipment effect is dead; returns the session and the dead effect's id.
async fn order_with_a_dead_shipment(app: &TestApp) -> (String, i64) {
    let session = app.stripe.add_session(order());
    app.deliver("evt_refused", "checkout.session.completed", &session)
        .await;
    app.wait_for(&session, Status::Fulfilled).await;
    for _ in 0..400 {
        let dead = app.db.list_effects(Some(EffectStatus::Dead), 10).await;
        if let Some(effect) = dead.unwrap().into_iter().next() {
            return (session, effect.id);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no effect died on {}", app.backend);
}

#[actix_web::test]
async fn without_admin_token_every_admin_path_is_404() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let browser = Browser::new(&app);
        for path in [
            "/admin",
            "/admin/login",
            "/admin/dead",
            "/admin/stock",
            "/admin/x",
        ] {
            assert_eq!(browser.get(path).await.status(), 404, "{path}");
        }
        for path in ["/admin", "/admin/login", "/admin/effects/1/retry"] {
            let response = browser.post(path, &[("token", TOKEN)]).await;
            assert_eq!(response.status(), 404, "{path}");
            assert_eq!(set_cookie(&response), None);
        }
    }
}

#[test]
fn a_short_admin_token_stops_start_up_without_being_echoed() {
    let mut settings = crate::helpers::settings("sqlite://unused.db", "http://127.0.0.1:9");
    settings.admin_token = Some("short-secret".into());
    let error = settings.validate().unwrap_err().to_string();
    assert!(error.contains("ADMIN_TOKEN"), "{error}");
    assert!(!error.contains("short-secret"), "{error}");
}

#[actix_web::test]
async fn a_wrong_token_gets_401_and_no_cookie_and_the_right_one_a_strict_http_only_cookie() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        let browser = Browser::new(&app);
        assert!(browser.page("/admin/login").await.contains("Sign in"));

        let refused = browser
            .post("/admin/login", &[("token", "correct-horse-battery-stapl")])
            .await;
        assert_eq!(refused.status(), 401);
        assert_eq!(set_cookie(&refused), None);
        assert!(
            refused
                .text()
                .await
                .unwrap()
                .contains("not the admin token")
        );

        let accepted = browser.post("/admin/login", &[("token", TOKEN)]).await;
        assert_eq!(accepted.status(), 303);
        assert_eq!(location(&accepted), "/admin");
        let cookie = set_cookie(&accepted).expect("a cookie");
        assert!(cookie.starts_with("fulfilld_admin="), "{cookie}");
        for attribute in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/admin",
            "Max-Age=43200",
        ] {
            assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
        }
        assert!(!cookie.contains("Secure"), "PUBLIC_URL is http: {cookie}");
        assert!(!cookie.contains(TOKEN), "{cookie}");
    }
}

#[actix_web::test]
async fn pages_send_a_browser_without_a_valid_cookie_to_sign_in() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        let anonymous = Browser::new(&app);
        for path in ["/admin", "/admin/dead", "/admin/stock"] {
            let response = anonymous.get(path).await;
            assert_eq!(response.status(), 303, "{path}");
            assert_eq!(location(&response), "/admin/login");
        }

        let signed_in = Browser::sign_in(&app).await;
        let page = signed_in.get("/admin").await;
        assert_eq!(page.status(), 200);
        let headers = page.headers();
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );

        let genuine = signed_in.cookie.clone().unwrap();
        let value = genuine.trim_start_matches("fulfilld_admin=");
        for forged in [
            format!("fulfilld_admin={value}00"),
            format!("fulfilld_admin={}", &value[..value.len() - 1]),
            format!("fulfilld_admin={}", "ab".repeat(32)),
            "fulfilld_admin=".to_owned(),
        ] {
            let mut browser = Browser::new(&app);
            browser.cookie = Some(forged.clone());
            let response = browser.get("/admin").await;
            assert_eq!(response.status(), 303, "{forged} was accepted");
        }
    }
}

#[actix_web::test]
async fn a_sign_in_holds_on_every_replica_until_it_signs_out_or_the_token_changes() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let admin = |token: &str| [("ADMIN_TOKEN", token.to_owned())];
        let first = Process::start_with(&database.url, stripe.url(), &admin(TOKEN)).await;
        let second = Process::start_with(&database.url, stripe.url(), &admin(TOKEN)).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let sign_in = async |process: &Process| {
            let response = client
                .post(format!("{}/admin/login", process.address))
                .form(&[("token", TOKEN)])
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 303);
            let set = set_cookie(&response).expect("a cookie");
            set.split(';').next().unwrap().to_owned()
        };
        let page = async |process: &Process, cookie: &str| {
            client
                .get(format!("{}/admin", process.address))
                .header(COOKIE, cookie)
                .send()
                .await
                .expect("answered")
        };

        // Signed in on one replica, known to the other.
        let cookie = sign_in(&first).await;
        let shown = page(&second, &cookie).await;
        assert_eq!(shown.status(), 200, "on {backend:?}");
        let html = shown.text().await.unwrap();
        let (_, rest) = html.split_once(r#"name="csrf" value=""#).expect("a form");
        let csrf = rest.split('"').next().unwrap().to_owned();

        // Signed out on the other: over everywhere, whoever kept the cookie.
        let out = client
            .post(format!("{}/admin/logout", second.address))
            .header(COOKIE, &cookie)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .expect("answered");
        assert_eq!(out.status(), 303);
        assert_eq!(page(&first, &cookie).await.status(), 303, "on {backend:?}");

        // A new ADMIN_TOKEN ends every sign-in made with the old one.
        let kept = sign_in(&first).await;
        drop(second);
        let rotated = Process::start_with(
            &database.url,
            stripe.url(),
            &admin("a-token-after-rotation"),
        )
        .await;
        assert_eq!(page(&rotated, &kept).await.status(), 303, "on {backend:?}");
    }
}

#[actix_web::test]
async fn a_retry_without_the_right_csrf_token_is_refused_and_leaves_the_effect_dead() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[400]);
        let app = spawn_app_with(&backend, |settings| {
            settings.admin_token = Some(TOKEN.into());
            settings.effects.smtp_url = Some(smtp.url());
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let (session, effect) = order_with_a_dead_shipment(&app).await;
        let browser = Browser::sign_in(&app).await;
        let retry = format!("/admin/effects/{effect}/retry");

        let without = browser.post(&retry, &[]).await;
        assert_eq!(without.status(), 403, "{}", app.backend);
        let wrong = browser.post(&retry, &[("csrf", &"00".repeat(32))]).await;
        assert_eq!(wrong.status(), 403);
        // Another operator's token does not fit this cookie.
        let other = Browser::sign_in(&app).await;
        let theirs = other.csrf("/admin/dead").await;
        assert_eq!(
            browser.post(&retry, &[("csrf", &theirs)]).await.status(),
            403
        );
        // Nor does a cookie-less request with a token.
        let csrf = browser.csrf("/admin/dead").await;
        let anonymous = Browser::new(&app);
        assert_eq!(
            anonymous.post(&retry, &[("csrf", &csrf)]).await.status(),
            403
        );

        app.drained().await;
        let dead = app.db.list_effects(Some(EffectStatus::Dead), 10).await;
        assert_eq!(dead.unwrap().len(), 1, "still dead on {}", app.backend);
        assert_eq!(warehouse.requests().len(), 1);
        let shipment = app.outcome(&session).await.unwrap().shipment.unwrap();
        assert_eq!(shipment.status, ShipmentStatus::Failed);
    }
}

#[actix_web::test]
async fn a_dead_effect_retried_from_the_page_is_carried_out() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let warehouse = Warehouse::start(&[400]);
        let app = spawn_app_with(&backend, |settings| {
            settings.admin_token = Some(TOKEN.into());
            settings.effects.smtp_url = Some(smtp.url());
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
        })
        .await;
        let (session, effect) = order_with_a_dead_shipment(&app).await;
        let browser = Browser::sign_in(&app).await;
        let dead = browser.page("/admin/dead").await;
        assert!(
            dead.contains(&format!("/admin/effects/{effect}/retry")),
            "{dead}"
        );
        assert!(
            dead.contains("400"),
            "the warehouse's answer is shown: {dead}"
        );

        let csrf = browser.csrf("/admin/dead").await;
        let retried = browser
            .post(
                &format!("/admin/effects/{effect}/retry"),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(retried.status(), 303);
        let back = location(&retried);
        assert_eq!(
            back,
            format!("/admin/dead?notice=effect_retried&id={effect}")
        );
        assert!(browser.page(&back).await.contains("pending again"));

        let requests = warehouse.wait_for(2).await;
        app.wait_for_effects(&session).await;
        assert_eq!(requests[1].status, 200, "{}", app.backend);
        let shipment = app.outcome(&session).await.unwrap().shipment.unwrap();
        assert_eq!(shipment.status, ShipmentStatus::Submitted);

        // A second press finds nothing dead and changes nothing.
        let again = browser
            .post(
                &format!("/admin/effects/{effect}/retry"),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(
            location(&again),
            format!("/admin/dead?notice=effect_not_dead&id={effect}")
        );
        app.drained().await;
        assert_eq!(warehouse.requests().len(), 2);
    }
}

#[actix_web::test]
async fn a_dead_event_retried_from_the_page_fulfils_its_session() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Print", 1500, 1)]));
        let body = app
            .stripe
            .event_payload("evt_missing", "checkout.session.completed", &session);
        // Unknown to this key when it arrives: the event dies at once.
        let spec = app.stripe.remove_session(&session).expect("known");
        assert_eq!(
            app.post_webhook(body.clone(), Some(sign(&body)))
                .await
                .status(),
            200
        );
        crate::helpers::wait_for_event(&app.db, "evt_missing", |e| e.state() == "dead").await;

        let browser = Browser::sign_in(&app).await;
        let dead = browser.page("/admin/dead").await;
        assert!(dead.contains("/admin/events/evt_missing/retry"), "{dead}");
        assert!(dead.contains("resource_missing"), "{dead}");
        let sessions = browser.page("/admin").await;
        assert!(
            sessions.contains("0 dead effects, 1 dead events"),
            "{sessions}"
        );

        app.stripe.insert_session(&session, spec);
        let csrf = browser.csrf("/admin/dead").await;
        let retried = browser
            .post("/admin/events/evt_missing/retry", &[("csrf", &csrf)])
            .await;
        assert_eq!(retried.status(), 303);
        assert_eq!(
            location(&retried),
            "/admin/dead?notice=event_retried&id=evt_missing"
        );
        app.wait_for(&session, Status::Fulfilled).await;
        let event =
            crate::helpers::wait_for_event(&app.db, "evt_missing", |e| e.state() == "processed")
                .await;
        assert_eq!(event.dead_at, None, "{}", app.backend);
    }
}

#[actix_web::test]
async fn sessions_are_found_by_customer_email_and_by_session_id() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        let mut spec = SessionSpec::paid(&[("Poster", 800, 1)]);
        spec.email = Some("Jenny.Rosen@Example.com".into());
        let jenny = app.stripe.add_session(spec);
        let other = app
            .stripe
            .add_session(SessionSpec::paid(&[("Mug", 1200, 1)]));
        app.deliver_completed(&[jenny.clone(), other.clone()]).await;
        app.wait_for(&jenny, Status::Fulfilled).await;
        app.wait_for(&other, Status::Fulfilled).await;
        let browser = Browser::sign_in(&app).await;

        let all = browser.page("/admin").await;
        assert!(all.contains(&jenny) && all.contains(&other), "{all}");
        for search in [
            "jenny.rosen@example.com",
            "JENNY.ROSEN",
            jenny.as_str(),
            &jenny[..14],
        ] {
            let found = browser.search(search).await;
            assert!(found.contains(&jenny), "{search} did not find it");
            if search.len() > 14 {
                assert!(!found.contains(&other), "{search} found another");
            }
        }
        // `_` in a search is a character, not a wildcard.
        let none = browser.search("cs_test_%").await;
        assert!(!none.contains(&jenny), "{none}");
        let none = browser.search("nobody@example.com").await;
        assert!(none.contains("No sessions match"), "{none}");
        // The search is a form: the address stays out of URLs, and a forged one is refused.
        assert!(
            !browser
                .page("/admin?q=nobody@example.com")
                .await
                .contains("No sessions match")
        );
        let forged = browser.post("/admin", &[("q", "jenny")]).await;
        assert_eq!(forged.status(), 403);
    }
}

#[actix_web::test]
async fn a_sessions_timeline_shows_its_events_effects_stock_shipment_and_access() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        let session = app.stripe.add_session(order());
        app.deliver("evt_timeline", "checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::Fulfilled).await;
        app.wait_for_effects(&session).await;
        let browser = Browser::sign_in(&app).await;

        let page = browser.page(&format!("/admin/sessions/{session}")).await;
        for expected in [
            "fulfilled",
            "$59.00",
            "customer@example.com",
            "2 x T-shirt",
            "evt_timeline",
            "checkout.session.completed",
            "processed",
            "receipt",
            "inventory",
            "shipment",
            "TEE-M",
            "applied",
            "awaiting_manual_handling",
            "1 Main St",
            "EBOOK-FULFILL",
            "downloads.example.com",
        ] {
            assert!(
                page.contains(expected),
                "{expected} missing on {}: {page}",
                app.backend
            );
        }

        let stock = browser.page("/admin/stock").await;
        assert!(stock.contains("TEE-M") && stock.contains(">23<"), "{stock}");

        let bad = browser.get("/admin/sessions/cs_test_<script>").await;
        assert_eq!(bad.status(), 400);
        assert!(!bad.text().await.unwrap().contains("<script>"));
        let unknown = browser.get("/admin/sessions/cs_test_unknown1").await;
        assert_eq!(unknown.status(), 404);
    }
}

#[actix_web::test]
async fn a_connected_accounts_session_shows_its_account() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        let session = app
            .stripe
            .add_session(order().on_account("acct_1AdminShop"));
        app.deliver("evt_connected", "checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::Fulfilled).await;
        let browser = Browser::sign_in(&app).await;

        let page = browser.page(&format!("/admin/sessions/{session}")).await;
        assert!(page.contains("acct_1AdminShop"), "{}: {page}", app.backend);
    }
}

#[actix_web::test]
async fn an_oversold_sku_is_flagged_on_the_stock_page() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        // Ten mugs in stock, twelve paid for.
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Mug", 1200, 12)]).with_prices(&["price_mug"]));
        app.deliver("evt_mugs", "checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::Fulfilled).await;
        app.wait_for_effects(&session).await;
        let browser = Browser::sign_in(&app).await;

        let stock = browser.page("/admin/stock").await;
        let mug = stock
            .split("<tr>")
            .find(|row| row.contains("<code>MUG</code>"))
            .expect("a row for MUG");
        assert!(mug.contains(">-2<") && mug.contains("oversold"), "{mug}");
        let tee = stock
            .split("<tr>")
            .find(|row| row.contains("<code>TEE-M</code>"))
            .expect("a row for TEE-M");
        assert!(!tee.contains("status oversold"), "{tee}");
    }
}

#[actix_web::test]
async fn failed_sign_ins_are_throttled_even_for_the_right_token() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        let browser = Browser::new(&app);
        for _ in 0..10 {
            let wrong = browser
                .post("/admin/login", &[("token", "guess-guess-guess")])
                .await;
            assert_eq!(wrong.status(), 401);
        }
        let throttled = browser.post("/admin/login", &[("token", TOKEN)]).await;
        assert_eq!(throttled.status(), 429, "{}", app.backend);
        assert!(throttled.headers().contains_key("retry-after"));
        assert_eq!(set_cookie(&throttled), None);
    }
}

#[actix_web::test]
async fn signing_out_is_a_post_with_the_csrf_token_that_clears_the_cookie() {
    for backend in backends() {
        let app = spawn_admin(&backend).await;
        let browser = Browser::sign_in(&app).await;
        assert_eq!(browser.post("/admin/logout", &[]).await.status(), 403);

        let csrf = browser.csrf("/admin").await;
        let out = browser.post("/admin/logout", &[("csrf", &csrf)]).await;
        assert_eq!(out.status(), 303);
        assert_eq!(location(&out), "/admin/login");
        let cleared = set_cookie(&out).expect("a cookie");
        assert!(cleared.starts_with("fulfilld_admin=;") && cleared.contains("Max-Age=0"));
        // The sign-in is over, not only forgotten by this browser.
        assert_eq!(browser.get("/admin").await.status(), 303, "{}", app.backend);
    }
}

#[actix_web::test]
async fn a_refund_from_the_page_is_checked_confirmed_made_once_and_reversed_by_webhook() {
    for backend in backends() {
        let smtp = SmtpServer::start();
        let app = spawn_app_with(&backend, |settings| {
            settings.admin_token = Some(TOKEN.into());
            settings.effects.smtp_url = Some(smtp.url());
        })
        .await;
        app.stripe
            .send_webhooks_to(&format!("{}/webhook", app.address), WEBHOOK_SECRET);
        let session = app.stripe.add_session(ebook_and_poster());
        app.stripe
            .emit("checkout.session.completed", &session)
            .await;
        app.wait_for(&session, Status::Fulfilled).await;
        let browser = Browser::sign_in(&app).await;
        let timeline = format!("/admin/sessions/{session}");
        let csrf = browser.csrf(&timeline).await;
        let action = format!("{timeline}/refund");
        let refunds_made = || {
            app.stripe
                .events()
                .iter()
                .filter(|e| e.event_type == "refund.created")
                .count()
        };

        // Refused, naming the field, and nothing asked of Stripe.
        for (form, says) in [
            (
                vec![("amount", "nine")],
                "Amount: expected an amount in USD",
            ),
            (vec![("amount", "0")], "Amount: expected more than 0"),
            (vec![("amount", "9.001")], "USD has 2 decimal places"),
            (vec![("amount", "25")], "Amount: only USD 20.00 is left"),
            (
                vec![("items", "EBOOK-FULFILL:1")],
                "Items: give an amount too",
            ),
            (
                vec![("amount", "9"), ("items", "MUG:1")],
                "has no MUG; it has EBOOK-FULFILL",
            ),
        ] {
            let form = [&[("csrf", csrf.as_str())][..], &form].concat();
            let response = browser.post(&action, &form).await;
            assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let page = response.text().await.unwrap();
            assert!(page.contains(says), "{says} missing: {page}");
        }
        let forged = [("amount", "9"), ("confirm", "yes")];
        assert_eq!(browser.post(&action, &forged).await.status(), 403);

        // The first POST asks; only the confirmation refunds, and twice is once.
        let ask = [
            ("csrf", csrf.as_str()),
            ("amount", "9.00"),
            ("items", "EBOOK-FULFILL:1"),
        ];
        let asked = browser.post(&action, &ask).await;
        assert_eq!(asked.status(), StatusCode::OK);
        let asked = asked.text().await.unwrap();
        assert!(
            asked.contains("Refund $9.00 for EBOOK-FULFILL:1 to the customer?"),
            "{asked}"
        );
        assert_eq!(refunds_made(), 0);
        // A confirmation without the confirmation page's nonce only asks again.
        let unasked = [&ask[..], &[("confirm", "yes")]].concat();
        assert_eq!(browser.post(&action, &unasked).await.status(), 200);
        assert_eq!(refunds_made(), 0);
        let nonce = nonce_of(&asked);
        let confirm = [&unasked[..], &[("nonce", nonce.as_str())]].concat();
        let made = browser.post(&action, &confirm).await;
        assert_eq!(made.status(), StatusCode::SEE_OTHER);
        let back = location(&made);
        assert!(back.starts_with(&format!("{timeline}?notice=refund_made&id=re_")));
        let again = browser.post(&action, &confirm).await;
        assert_eq!(location(&again), back, "the same refund, answered again");
        assert_eq!(
            wait_for_refunded(&app, &session, 900).await,
            Status::PartiallyRefunded,
            "on {backend:?}"
        );
        assert_eq!(refunds_made(), 1);
        let page = browser.page(&back).await;
        let refund_id = back.rsplit('=').next().unwrap();
        for expected in [
            "Stripe made refund re_",
            "Refunds and disputes",
            refund_id,
            "EBOOK-FULFILL:1",
            "$9.00",
            "partially_refunded",
        ] {
            assert!(page.contains(expected), "{expected} missing: {page}");
        }

        // The rest, with the amount left empty; then there is nothing left to refund.
        let rest = [("csrf", csrf.as_str()), ("amount", "")];
        let asked = browser.post(&action, &rest).await.text().await.unwrap();
        assert!(
            asked.contains("Refund all $11.00 left to the customer?"),
            "{asked}"
        );
        let nonce = nonce_of(&asked);
        let rest = [&rest[..], &[("confirm", "yes"), ("nonce", nonce.as_str())]].concat();
        assert_eq!(browser.post(&action, &rest).await.status(), 303);
        assert_eq!(
            wait_for_refunded(&app, &session, 2000).await,
            Status::Refunded,
            "on {backend:?}"
        );
        assert!(!browser.page(&timeline).await.contains("Refund…"));
        let more = browser.post(&action, &rest).await;
        assert_eq!(more.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            more.text()
                .await
                .unwrap()
                .contains("refunded in full already")
        );
        assert_eq!(refunds_made(), 2);
        app.drained().await;
        assert_eq!(mails(&smtp, &session, "refund_email"), 1, "on {backend:?}");
    }
}

/// The nonce of the confirmation form on `page`.
fn nonce_of(page: &str) -> String {
    let (_, rest) = page
        .split_once(r#"name="nonce" value=""#)
        .expect("a confirmation with a nonce");
    rest.split('"').next().unwrap().to_owned()
}
