//! The SMTP sync gap: a message the mail server has taken, and that is not yet recorded as
//! sent, is sent again after a crash. A process lets one message at a time into that gap,
//! so a `kill -9` repeats one receipt at most, however many conversations it had open.

use std::collections::HashSet;

use crate::faults::connect;
use crate::helpers::{Backend, Process, backends, deliver_each, drained, paid_sessions};
use crate::smtp::{SmtpServer, Stall};

/// Connections a process keeps to the mail server at most.
const CONNECTIONS: usize = 8;

#[actix_web::test]
async fn a_kill_9_while_the_mail_server_sits_on_messages_repeats_one_receipt_at_most() {
    for backend in backends() {
        kill_in_the_gap(&backend, 1).await;
    }
}

/// `SMTP_SYNC_GAP` lets more messages into the gap at once, and a crash repeats as many.
#[actix_web::test]
async fn smtp_sync_gap_lets_that_many_messages_into_the_gap_and_no_more() {
    for backend in backends() {
        kill_in_the_gap(&backend, 3).await;
    }
}

/// Kills a process whose mail server took `gap` messages whole and answered none, with
/// every other connection at its message; then checks that a restart sends every receipt
/// and repeats `gap` at most.
async fn kill_in_the_gap(backend: &Backend, gap: usize) {
    let stripe = fulfilld::sandbox::StripeDouble::start().expect("Stripe double starts");
    let database = backend.fresh_database().await;
    let smtp = SmtpServer::start();
    // The server takes each message whole and answers none; once it recovers it keeps
    // what it took, as a server that had queued them would.
    smtp.go_silent(Stall::MessageData);
    let env = [
        ("SMTP_URL", smtp.url()),
        ("SMTP_SYNC_GAP", gap.to_string()),
        ("EFFECT_TIMEOUT_SECS", "30".into()),
        ("EFFECT_LEASE_SECS", "2".into()),
    ];
    let process = Process::start_with(&database.url, stripe.url(), &env).await;
    let sessions = paid_sessions(&stripe, "Lamp", 2500, 12);
    deliver_each(&stripe, &process, &sessions).await;
    // Every connection the process may open is at its message, and `gap` messages
    // have reached the server whole.
    smtp.wait_data(CONNECTIONS, gap).await;

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
        twice <= gap,
        "{twice} receipts sent twice after one kill, with {gap} let into the gap, on \
             {backend:?}"
    );
}
