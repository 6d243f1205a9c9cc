//! The SMTP sync gap: a message the mail server has taken, and that is not yet recorded as
//! sent, is sent again after a crash. A process lets one message at a time into that gap,
//! so a `kill -9` repeats one receipt at most, however many conversations it had open.

use std::collections::HashSet;

use crate::faults::connect;
use crate::helpers::{Process, backends, deliver_each, drained, paid_sessions};
use crate::smtp::{SmtpServer, Stall};

/// Connections a process keeps to the mail server at most.
const CONNECTIONS: usize = 8;

#[actix_web::test]
async fn a_kill_9_while_the_mail_server_sits_on_messages_repeats_one_receipt_at_most() {
    for backend in backends() {
        let stripe = fulfilld::sandbox::StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let smtp = SmtpServer::start();
        // The server takes each message whole and answers none; once it recovers it keeps
        // what it took, as a server that had queued them would.
        smtp.go_silent(Stall::MessageData);
        let env = [
            ("SMTP_URL", smtp.url()),
            ("EFFECT_TIMEOUT_SECS", "30".into()),
            ("EFFECT_LEASE_SECS", "2".into()),
        ];
        let process = Process::start_with(&database.url, stripe.url(), &env).await;
        let sessions = paid_sessions(&stripe, "Lamp", 2500, 12);
        deliver_each(&stripe, &process, &sessions).await;
        // Every connection the process may open is at its message, and one message has
        // reached the server whole.
        smtp.wait_data(CONNECTIONS, 1).await;

        process.kill_9();
        smtp.recover();
        let _restarted = Process::start_with(&database.url, stripe.url(), &env).await;
        smtp.wait_for(sessions.len()).await;
        // Settled: every receipt recorded, none left to attempt, so none can come again.
        drained(&connect(&database.url).await).await;

        let mail = smtp.accepted();
        let ids: HashSet<_> = mail.iter().map(|m| m.message_id()).collect();
        for session in &sessions {
            assert!(
                ids.contains(&format!("<{session}.receipt@localhost>")),
                "{session} has no receipt on {backend:?}"
            );
        }
        let twice = mail.len() - ids.len();
        assert!(
            twice <= 1,
            "{twice} receipts sent twice after one kill on {backend:?}"
        );
    }
}
