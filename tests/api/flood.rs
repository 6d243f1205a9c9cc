//! A flood of made-up session ids on the landing page cannot spend the Stripe budget that
//! paid orders need.

use std::time::{Duration, Instant};

use fulfilld::configuration::parse_proxy;
use fulfilld::domain::Status;
use futures_util::future::join_all;

use crate::helpers::{backends, paid_sessions, spawn_app_with};

fn made_up(prefix: &str) -> String {
    let tail: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect();
    format!("{prefix}{tail}")
}

#[actix_web::test]
async fn a_flood_of_made_up_ids_gets_404s_within_its_share_while_paid_orders_are_fulfilled() {
    for backend in backends() {
        // 10 calls a second; lookups may take half while webhooks wait. The flood comes
        // through a trusted proxy from 40 addresses, each within its own allowance.
        let app = spawn_app_with(&backend, |settings| {
            settings.stripe_max_rps = Some(10);
            settings.trusted_proxies = vec![parse_proxy("127.0.0.1").expect("address")];
        })
        .await;
        // 80 paid orders: 16 s of calls at the half the flood leaves them, so background
        // work waits for the whole flood, including its last lookups, which may wait up
        // to the landing page's 8 s after the flood stops.
        let orders = paid_sessions(&app.stripe, "Mug", 1200, 80);

        // Neither a live-mode id (with a test key) nor a repeated unknown id costs a call.
        let live = made_up("cs_live_");
        let page = app.get(&format!("/after-checkout?session_id={live}")).await;
        assert_eq!(page.status(), 404);
        let unknown = made_up("cs_test_");
        for _ in 0..3 {
            let page = app.get(&format!("/api/checkout-sessions/{unknown}")).await;
            assert_eq!(page.status(), 404);
        }
        assert_eq!(app.stripe.calls(&live), 0);
        assert_eq!(
            app.stripe.calls(&unknown),
            1,
            "remembered after the first answer"
        );

        let flood_for = Duration::from_secs(5);
        let started = Instant::now();
        let app = &app;
        let clients = (0..40).map(|n| async move {
            let mut ids = Vec::new();
            while started.elapsed() < flood_for {
                let id = made_up("cs_test_");
                let page = app
                    .get_from(
                        &format!("/after-checkout?session_id={id}"),
                        &format!("198.51.100.{n}"),
                    )
                    .await;
                assert!(
                    matches!(page.status().as_u16(), 404 | 429 | 503),
                    "{page:?}"
                );
                ids.push(id);
            }
            ids
        });
        let deliveries = app.deliver_completed(&orders);
        let (flooded, acks) = futures_util::join!(join_all(clients), deliveries);
        assert!(acks.iter().all(|status| *status == 200));
        let elapsed = started.elapsed().as_secs_f64();
        let fulfilled = app.count_fulfilled(&orders).await;
        let flood_calls: usize = flooded
            .iter()
            .flatten()
            .map(|id| app.stripe.calls(id))
            .sum();

        // The orders got their half of the budget while the flood lasted...
        let half = 10.0 * 0.5 * elapsed;
        assert!(
            fulfilled as f64 >= half * 0.6,
            "{fulfilled} paid orders fulfilled in {elapsed:.1} s of flood on {}",
            app.backend
        );
        // ...and the flood no more than the other half, plus what it may take in full
        // before the paid orders' work is waiting for calls (their deliveries are still
        // being stored): a second's worth.
        assert!(
            (flood_calls as f64) <= half + 10.0 * 0.5 + 3.0,
            "{flood_calls} Stripe calls for made-up ids in {elapsed:.1} s on {}",
            app.backend
        );
        for session in &orders {
            app.wait_for(session, Status::Fulfilled).await;
        }
    }
}

#[actix_web::test]
async fn a_client_past_its_allowance_gets_429_with_retry_after_and_costs_no_call() {
    for backend in backends() {
        // 8 lookups a minute: a burst of 2, then one every 7.5 s.
        let app = spawn_app_with(&backend, |settings| {
            settings.client_lookups_per_min = 8;
        })
        .await;
        let order = paid_sessions(&app.stripe, "Mug", 1300, 1).remove(0);
        app.deliver_completed(std::slice::from_ref(&order)).await;
        app.wait_for(&order, Status::Fulfilled).await;

        // Without a trusted proxy, X-Forwarded-For is the client's own claim: ignored.
        for n in 0..2 {
            let id = made_up("cs_test_");
            let page = app
                .get_from(
                    &format!("/api/checkout-sessions/{id}"),
                    &format!("192.0.2.{n}"),
                )
                .await;
            assert_eq!(page.status(), 404, "{}", app.backend);
        }
        let id = made_up("cs_test_");
        let page = app
            .get_from(&format!("/after-checkout?session_id={id}"), "192.0.2.99")
            .await;
        assert_eq!(page.status(), 429, "{}", app.backend);
        let retry_after = retry_after(&page);
        assert!((1..=8).contains(&retry_after), "Retry-After: {retry_after}");
        let json = app.get(&format!("/api/checkout-sessions/{id}")).await;
        assert_eq!(json.status(), 429);
        assert!(retry_after_of(&json).is_some());
        assert_eq!(app.stripe.calls(&id), 0, "refused before any Stripe call");

        // What is recorded costs no call, and is shown whatever the allowance.
        let page = app
            .get(&format!("/after-checkout?session_id={order}"))
            .await;
        assert_eq!(page.status(), 200, "{}", app.backend);
        assert!(page.text().await.expect("body").contains("Mug"));

        // Behind a trusted proxy each forwarded address has its own allowance, and what a
        // client writes before the proxy's own entry is not believed.
        let proxied = spawn_app_with(&backend, |settings| {
            settings.client_lookups_per_min = 8;
            settings.trusted_proxies = vec![parse_proxy("127.0.0.0/8").expect("network")];
        })
        .await;
        let lookup = |forwarded: &'static str| {
            let proxied = &proxied;
            async move {
                let id = made_up("cs_test_");
                proxied
                    .get_from(&format!("/api/checkout-sessions/{id}"), forwarded)
                    .await
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(lookup("198.51.100.1").await, 404);
        assert_eq!(lookup("203.0.113.5, 198.51.100.1").await, 404);
        assert_eq!(lookup("203.0.113.6, 198.51.100.1").await, 429);
        assert_eq!(lookup("198.51.100.2").await, 404, "another client");
    }
}

#[actix_web::test]
async fn a_client_starting_checkouts_past_its_allowance_gets_429_and_costs_no_session() {
    for backend in backends() {
        // 8 Stripe calls a minute: a burst of 2.
        let app = spawn_app_with(&backend, |settings| {
            settings.client_lookups_per_min = 8;
        })
        .await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let buy = || {
            client
                .post(format!("{}/checkout", app.address))
                .form(&[("price", "price_mug"), ("quantity", "1")])
                .send()
        };
        for _ in 0..2 {
            assert_eq!(buy().await.expect("answered").status(), 303);
        }
        let calls = app.stripe.total_calls();
        let refused = buy().await.expect("answered");
        assert_eq!(refused.status(), 429, "{}", app.backend);
        assert!((1..=8).contains(&retry_after(&refused)));
        assert!(
            refused
                .text()
                .await
                .expect("body")
                .contains("please wait a moment")
        );
        assert_eq!(app.stripe.total_calls(), calls, "no session was created");
        // A form that is refused anyway costs nothing of the allowance.
        let bad = client
            .post(format!("{}/checkout", app.address))
            .form(&[("price", "price_nope"), ("quantity", "1")])
            .send()
            .await
            .expect("answered");
        assert_eq!(bad.status(), 400);
    }
}

fn retry_after_of(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("Retry-After")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    retry_after_of(response).expect("a Retry-After of whole seconds")
}

#[actix_web::test]
async fn simultaneous_lookups_of_one_made_up_id_cost_one_call() {
    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        // Slow enough that every request is queued behind the first one's call.
        app.stripe.set_delay(std::time::Duration::from_millis(300));
        let id = made_up("cs_test_");
        let path = format!("/api/checkout-sessions/{id}");
        let statuses = join_all((0..20).map(|_| app.get(&path))).await;
        for response in &statuses {
            assert_eq!(response.status(), 404, "{response:?} on {}", app.backend);
        }
        assert_eq!(app.stripe.calls(&id), 1, "{}", app.backend);
    }
}

/// Clients that open a connection and never finish their headers, hundreds of them, hold
/// nothing a real delivery needs; and each is cut off once its time to send them is up.
#[actix_web::test]
async fn hundreds_of_clients_that_never_finish_their_headers_keep_no_delivery_waiting() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    for backend in backends() {
        let app = spawn_app_with(&backend, |_| {}).await;
        let host = app.address.trim_start_matches("http://").to_owned();
        let mut stalled = Vec::new();
        for _ in 0..300 {
            let mut stream = tokio::net::TcpStream::connect(&host)
                .await
                .expect("connects");
            stream
                .write_all(b"POST /webhook HTTP/1.1\r\nHost: shop\r\nStripe-Sig")
                .await
                .expect("half a request sent");
            stalled.push(stream);
        }

        let session = paid_sessions(&app.stripe, "Book", 1500, 1).remove(0);
        let started = Instant::now();
        let answer = app
            .deliver(
                "evt_past_the_stalled",
                "checkout.session.completed",
                &session,
            )
            .await;
        assert_eq!(answer.status(), 200, "on {backend:?}");
        let waited = started.elapsed();
        // Answered while every stalled client still held its connection.
        let mut probe = [0u8; 1];
        for stream in &stalled {
            assert!(
                matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "a stalled connection was closed before the delivery was answered ({waited:?})"
            );
        }
        app.wait_for(&session, Status::Fulfilled).await;

        // Each is cut off once the time to send its headers is up: answered 408, or closed.
        for mut stream in stalled {
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
                    .await;
            let closed = match read {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Err(_) => false,
            };
            let said = String::from_utf8_lossy(&answer);
            assert!(
                closed && (answer.is_empty() || said.starts_with("HTTP/1.1 408")),
                "{said:?} on {backend:?}"
            );
        }
    }
}
