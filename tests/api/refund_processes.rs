//! Refunds across real processes: two replicas told the same refunds at once, one of them
//! killed with SIGKILL while it reverses them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fulfilld::db::{Database, DatabaseUrl};
use fulfilld::domain::{EffectKind, EffectStatus, SessionId, Status};
use fulfilld::sandbox::{RefundSpec, SessionSpec, StripeDouble};
use futures_util::future::join_all;

use crate::helpers::{
    Process, assert_each_fulfilled_once, backends, deliver_each, post_webhook, sign, unix_now,
};
use crate::smtp::SmtpServer;

#[actix_web::test]
async fn two_replicas_told_the_same_refunds_one_killed_mid_reversal_reverse_each_once() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let smtp = SmtpServer::start();
        let env = [("SMTP_URL", smtp.url())];
        let first = Process::start_with(&database.url, stripe.url(), &env).await;
        let second = Process::start_with(&database.url, stripe.url(), &env).await;
        let sessions: Vec<String> = (0..12)
            .map(|n| stripe.add_session(SessionSpec::paid(&[("Print", 500 + n, 1)])))
            .collect();
        deliver_each(&stripe, &first, &sessions).await;
        assert_each_fulfilled_once(&database.url, &sessions).await;

        // Each session's full refund, delivered to both replicas at once; the first is
        // killed as soon as it has acknowledged them all, while it reverses them.
        let client = reqwest::Client::new();
        let bodies: Vec<String> = sessions
            .iter()
            .zip(500..)
            .map(|(session, amount)| {
                let refund = RefundSpec {
                    id: &format!("re_{session}"),
                    session,
                    amount,
                    status: "succeeded",
                    items: None,
                };
                stripe.refund_payload(
                    &format!("evt_re_{session}"),
                    "refund.created",
                    &refund,
                    unix_now(),
                )
            })
            .collect();
        let deliveries = bodies.iter().flat_map(|body| {
            [&first, &second].map(|process| {
                let (client, body) = (&client, body.clone());
                async move {
                    post_webhook(client, &process.address, body.clone(), Some(sign(&body)))
                        .await
                        .status()
                        .as_u16()
                }
            })
        });
        let answers = join_all(deliveries).await;
        assert!(answers.iter().all(|status| *status == 200), "{answers:?}");
        first.kill_9();

        let url = DatabaseUrl::parse(&database.url).expect("database URL");
        let db = Database::connect(&url).await.expect("database answers");
        let deadline = Instant::now() + Duration::from_secs(60);
        for session in &sessions {
            let id = SessionId::parse(session).expect("valid id");
            loop {
                // The status first: the transaction that wrote it enqueued the refund
                // email, so the effects read after it show the email.
                let outcome = db.outcome(&id).await.expect("database answers");
                let effects = db.effects_of(&id).await.expect("database answers");
                let refunded = outcome.as_ref().map(|o| o.status) == Some(Status::Refunded);
                if refunded
                    && effects
                        .iter()
                        .all(|(_, status)| *status != EffectStatus::Pending)
                {
                    // The receipt went, or the refund came before it could.
                    let receipt = [EffectStatus::Done, EffectStatus::Cancelled]
                        .map(|status| (EffectKind::Receipt, status));
                    assert!(receipt.contains(&effects[0]), "{session}: {effects:?}");
                    assert_eq!(
                        effects[1..],
                        [(EffectKind::RefundEmail, EffectStatus::Done)],
                        "{session} on {backend:?}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{session} not reversed on {backend:?}: {outcome:?} {effects:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Every customer's mail server saw their refund email; one sent again after the
        // kill carries the same Message-ID, so it is one email to the customer.
        let refund_mails: HashSet<String> = smtp
            .accepted()
            .iter()
            .map(|mail| mail.message_id())
            .filter(|id| id.contains(".refund_email@"))
            .collect();
        assert_eq!(refund_mails.len(), sessions.len(), "on {backend:?}");
        drop(second);
    }
}
