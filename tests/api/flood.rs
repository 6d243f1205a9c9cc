//! A flood of made-up session ids on the landing page cannot spend the Stripe budget that
//! paid orders need.

use std::time::{Duration, Instant};

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
        // 10 calls a second; lookups may take half while webhooks wait.
        let app = spawn_app_with(&backend, |settings| {
            settings.stripe_max_rps = Some("10".into());
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
        let clients = (0..40).map(|_| async move {
            let mut ids = Vec::new();
            while started.elapsed() < flood_for {
                let id = made_up("cs_test_");
                let page = app.get(&format!("/after-checkout?session_id={id}")).await;
                assert!(matches!(page.status().as_u16(), 404 | 503), "{page:?}");
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
        // ...and the flood no more than the other half.
        assert!(
            (flood_calls as f64) <= half + 3.0,
            "{flood_calls} Stripe calls for made-up ids in {elapsed:.1} s on {}",
            app.backend
        );
        for session in &orders {
            app.wait_for(session, Status::Fulfilled).await;
        }
    }
}
