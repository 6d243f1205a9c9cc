//! Download links carry a signed, expiring token; `GET /api/access/{token}` tells a
//! download server whether the link still gives access, at once after a dispute or a
//! refund.

use fulfilld::access::AccessSigner;
use fulfilld::domain::Status;
use fulfilld::sandbox::{RefundSpec, SessionSpec};
use serde_json::Value;

use crate::helpers::{TestApp, backends, sign, spawn_app, unix_now};

async fn ask(app: &TestApp, token: &str) -> (u16, Value) {
    let response = app.get(&format!("/api/access/{token}")).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn deliver(app: &TestApp, body: String) {
    let status = app
        .post_webhook(body.clone(), Some(sign(&body)))
        .await
        .status();
    assert_eq!(status, 200);
}

/// Waits until the download server is told `status` for `token`.
async fn wait_told(app: &TestApp, token: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, answer) = ask(app, token).await;
        if code == 200 && answer["status"] == status {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "{code} {answer}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[actix_web::test]
async fn a_download_link_is_active_then_suspended_then_revoked_and_forgeries_are_refused() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("E-book", 900, 1)]).with_prices(&["price_ebook"]));
        deliver(
            &app,
            app.stripe
                .event_payload("evt_paid", "checkout.session.completed", &session),
        )
        .await;
        app.wait_for(&session, Status::Fulfilled).await;
        let json: Value = app
            .get(&format!("/api/checkout-sessions/{session}"))
            .await
            .json()
            .await
            .expect("JSON");
        let url = json["access"][0]["url"]
            .as_str()
            .expect("a link")
            .to_owned();
        let token = url.split("token=").nth(1).expect("a token in the link");
        assert!(!token.contains('{'), "{url}");
        let page = app
            .get(&format!("/after-checkout?session_id={session}"))
            .await
            .text()
            .await
            .expect("page");
        assert!(page.contains(token), "the page shows the same link today");

        let answer = wait_told(&app, token, "active").await;
        assert_eq!(answer["sku"], "EBOOK-FULFILL");
        assert_eq!(answer["session_id"], session.as_str());

        // Forged, or made for a grant that does not exist.
        let (payload, _) = token.split_once('.').expect("payload.signature");
        assert_eq!(ask(&app, &format!("{payload}.AAAA")).await.0, 400);
        assert_eq!(ask(&app, "not-a-token").await.0, 400);
        let key = app.db.shared_secret("access").await.expect("db");
        let signer = AccessSigner::new(key.as_bytes());
        let far = unix_now() + 86_400;
        assert_eq!(ask(&app, &signer.token(&session, "MUG", far)).await.0, 404);
        let old = signer.token(&session, "EBOOK-FULFILL", unix_now() - 1);
        assert_eq!(
            wait_told(&app, &old, "expired").await["sku"],
            "EBOOK-FULFILL"
        );

        let dispute = |event: &str, kind: &str, status: &str| {
            app.stripe
                .dispute_payload(event, kind, &session, "dp_access", status, unix_now())
        };
        deliver(
            &app,
            dispute("evt_dp", "charge.dispute.created", "needs_response"),
        )
        .await;
        wait_told(&app, token, "suspended").await;
        deliver(&app, dispute("evt_dp_won", "charge.dispute.closed", "won")).await;
        wait_told(&app, token, "active").await;

        let refund = RefundSpec {
            id: "re_access",
            session: &session,
            amount: 900,
            status: "succeeded",
            items: None,
        };
        deliver(
            &app,
            app.stripe
                .refund_payload("evt_re", "refund.created", &refund, unix_now()),
        )
        .await;
        wait_told(&app, token, "revoked").await;
        // Revoked wins over expired: the link is not coming back.
        assert_eq!(wait_told(&app, &old, "revoked").await["status"], "revoked");
    }
}
