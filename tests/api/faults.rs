//! Faults that do not fail fast — mail servers that go silent, a stock row locked by
//! another connection, a deploy's SIGTERM, a `kill -9` — each met with the fault itself,
//! against real processes; asserted on what the customer and the database see.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use fulfilld::db::effects::EffectView;
use fulfilld::db::{Database, DatabaseUrl, now_ms};
use fulfilld::domain::{EffectKind, EffectStatus, SessionId};
use fulfilld::sandbox::{SessionSpec, StripeDouble};

use crate::effects::order;
use crate::helpers::{Backend, Process, backends, deliver_each, paid_sessions, postgres};
use crate::smtp::{SmtpServer, Stall};

/// How long a duplicate would take to show itself: a lease (2-3 s in these tests) plus a
/// backoff.
const LATE_DUPLICATE: Duration = Duration::from_secs(4);

pub async fn connect(url: &str) -> Database {
    Database::connect(&DatabaseUrl::parse(url).expect("database URL"))
        .await
        .expect("database answers")
}

/// Waits until `check` holds for the effects of `kind`, and returns them.
async fn wait_for_effects(
    db: &Database,
    kind: EffectKind,
    what: &str,
    check: impl Fn(&[EffectView]) -> bool,
) -> Vec<EffectView> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let effects: Vec<_> = db
            .list_effects(None, 1000)
            .await
            .expect("database answers")
            .into_iter()
            .filter(|effect| effect.kind == kind)
            .collect();
        if !effects.is_empty() && check(&effects) {
            return effects;
        }
        assert!(
            Instant::now() < deadline,
            "{what} on {}: {effects:?}",
            db.backend()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a receipt per session, then a while longer for any duplicate to show, and
/// asserts that every session got exactly one.
async fn wait_for_one_receipt_each(smtp: &SmtpServer, sessions: &[String], backend: &Backend) {
    smtp.wait_for(sessions.len()).await;
    tokio::time::sleep(LATE_DUPLICATE).await;
    assert_one_receipt_each(smtp, sessions, backend);
}

/// Asserts that every session got exactly one receipt, by `Message-ID`.
fn assert_one_receipt_each(smtp: &SmtpServer, sessions: &[String], backend: &Backend) {
    let mail = smtp.accepted();
    let ids: HashSet<_> = mail.iter().map(|m| m.message_id()).collect();
    for session in sessions {
        assert!(
            ids.contains(&format!("<{session}.receipt@localhost>")),
            "{session} has no receipt on {backend:?}"
        );
    }
    let mut seen = HashSet::new();
    let twice: Vec<_> = mail
        .iter()
        .map(|m| m.message_id())
        .filter(|id| !seen.insert(id.clone()))
        .collect();
    assert!(
        twice.is_empty(),
        "duplicate receipts on {backend:?}: {twice:?}"
    );
}

#[actix_web::test]
async fn receipts_wait_out_a_mail_server_that_goes_silent_and_each_arrives_once() {
    for stall in [Stall::Greeting, Stall::MailFrom] {
        for backend in backends() {
            let stripe = StripeDouble::start().expect("Stripe double starts");
            let database = backend.fresh_database().await;
            let smtp = SmtpServer::start();
            smtp.go_silent(stall);
            let env = [
                ("SMTP_URL", smtp.url()),
                ("EFFECT_TIMEOUT_SECS", "2".into()),
                ("EFFECT_LEASE_SECS", "2".into()),
                ("EFFECT_MAX_ATTEMPTS", "100".into()),
            ];
            // Two processes share the outbox, so each retry is due at both.
            let first = Process::start_with(&database.url, stripe.url(), &env).await;
            let second = Process::start_with(&database.url, stripe.url(), &env).await;
            let sessions = paid_sessions(&stripe, "Mug", 1200, 20);
            deliver_each(&stripe, &first, &sessions[..10]).await;
            deliver_each(&stripe, &second, &sessions[10..]).await;
            let db = connect(&database.url).await;

            // Every receipt's attempts time out, count and are retried: none hangs.
            let failing = wait_for_effects(&db, EffectKind::Receipt, "timeouts", |effects| {
                effects.len() == sessions.len() && effects.iter().all(|e| e.attempts >= 2)
            })
            .await;
            for effect in &failing {
                assert_eq!(effect.status, EffectStatus::Pending, "{stall:?}");
            }
            assert!(
                failing.iter().any(|e| e
                    .last_error
                    .as_deref()
                    .is_some_and(|error| error.contains("EFFECT_TIMEOUT_SECS"))),
                "{failing:?}"
            );
            assert!(smtp.accepted().is_empty());

            smtp.recover();
            smtp.wait_for(sessions.len()).await;
            wait_for_effects(&db, EffectKind::Receipt, "receipts done", |effects| {
                effects.iter().all(|e| e.status == EffectStatus::Done)
            })
            .await;
            tokio::time::sleep(LATE_DUPLICATE).await;
            assert_one_receipt_each(&smtp, &sessions, &backend);
        }
    }
}

#[actix_web::test]
async fn a_message_whose_answer_never_came_is_sent_again_with_the_same_message_id() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let smtp = SmtpServer::start();
        smtp.go_silent(Stall::MessageData);
        let env = [
            ("SMTP_URL", smtp.url()),
            ("EFFECT_TIMEOUT_SECS", "3".into()),
            ("EFFECT_BACKOFF_MS", "4000".into()),
        ];
        let process = Process::start_with(&database.url, stripe.url(), &env).await;
        let session = stripe.add_session(SessionSpec::paid(&[("Clock", 3900, 1)]));
        deliver_each(&stripe, &process, std::slice::from_ref(&session)).await;
        let db = connect(&database.url).await;

        // The whole message went out; its answer did not come within the attempt.
        let failed = wait_for_effects(&db, EffectKind::Receipt, "a timeout", |effects| {
            effects[0].attempts == 1 && effects[0].last_error.is_some()
        })
        .await;
        assert_eq!(failed[0].status, EffectStatus::Pending);
        assert!(
            failed[0].next_attempt_at > now_ms(),
            "{failed:?}: backoff applies"
        );
        // The server had queued it after all: this is the sync gap.
        smtp.recover();

        let mail = smtp.wait_for(2).await;
        let done = wait_for_effects(&db, EffectKind::Receipt, "done", |effects| {
            effects[0].status == EffectStatus::Done
        })
        .await;
        tokio::time::sleep(LATE_DUPLICATE).await;
        assert_eq!(done[0].attempts, 2, "on {backend:?}");
        assert_eq!(smtp.accepted().len(), 2, "on {backend:?}");
        let expected = format!("<{session}.receipt@localhost>");
        assert_eq!(mail[0].message_id(), expected);
        assert_eq!(mail[1].message_id(), expected);
    }
}

#[actix_web::test]
async fn stock_moves_once_while_another_connection_holds_its_row_for_several_leases() {
    // A row lock held by another connection: PostgreSQL's row-level locking. (SQLite locks
    // the whole file, and one connection does all of a process's writes.)
    if let Some(backend) =
        postgres("stock_moves_once_while_another_connection_holds_its_row_for_several_leases")
    {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let env = [
            ("EFFECT_TIMEOUT_SECS", "1".into()),
            ("EFFECT_LEASE_SECS", "2".into()),
            ("EFFECT_BACKOFF_MS", "200".into()),
            ("EFFECT_MAX_ATTEMPTS", "100".into()),
        ];
        let process = Process::start_with(&database.url, stripe.url(), &env).await;
        let db = connect(&database.url).await;
        assert_eq!(db.stock("TEE-M").await.expect("db"), Some((25, false)));
        let mut report = AsyncPgConnection::establish(&database.url)
            .await
            .expect("PostgreSQL answers");
        report
            .batch_execute("BEGIN; SELECT stock FROM inventory WHERE sku = 'TEE-M' FOR UPDATE")
            .await
            .expect("row locked");

        let session = stripe.add_session(order());
        deliver_each(&stripe, &process, std::slice::from_ref(&session)).await;
        let locked_at = Instant::now();
        // Attempts time out on the lock, count, and are retried; nothing moves.
        wait_for_effects(&db, EffectKind::Inventory, "lock timeouts", |effects| {
            effects[0].attempts >= 3 && effects[0].status == EffectStatus::Pending
        })
        .await;
        // Four lease lengths.
        tokio::time::sleep(Duration::from_secs(8).saturating_sub(locked_at.elapsed())).await;
        assert_eq!(db.stock("TEE-M").await.expect("db"), Some((25, false)));
        report.batch_execute("COMMIT").await.expect("lock released");

        let done = wait_for_effects(&db, EffectKind::Inventory, "stock moved", |effects| {
            effects[0].status == EffectStatus::Done
        })
        .await;
        // Done is recorded in the transaction that moved the stock.
        assert_eq!(db.stock("TEE-M").await.expect("db"), Some((23, false)));
        let movements = db.stock_movements_of(&session).await.expect("db");
        assert_eq!(movements, [("TEE-M".to_owned(), 2, true)]);
        assert!(done[0].attempts >= 3, "{done:?}");
        assert!(done[0].lease_until.is_none());
    }
}

#[actix_web::test]
async fn a_sigterm_mid_send_exits_in_its_grace_and_the_next_process_sends_each_receipt_once() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let smtp = SmtpServer::start();
        // Answers held: every receipt is in flight when the deploy comes.
        smtp.hold();
        let env = [
            ("SMTP_URL", smtp.url()),
            ("EFFECT_TIMEOUT_SECS", "10".into()),
            ("SHUTDOWN_GRACE_SECS", "2".into()),
        ];
        let process = Process::start_with(&database.url, stripe.url(), &env).await;
        let sessions = paid_sessions(&stripe, "Vase", 2000, 20);
        deliver_each(&stripe, &process, &sessions).await;
        let db = connect(&database.url).await;
        // Every order recorded (acknowledged is not yet fulfilled) and receipts in flight.
        wait_for_effects(&db, EffectKind::Receipt, "receipts enqueued", |effects| {
            effects.len() == sessions.len()
        })
        .await;
        // One message past its point of no return; the next ones wait for its record,
        // before theirs.
        smtp.wait_data(8, 1).await;
        smtp.wait_held(1).await;

        let sent = smtp.held();
        let (status, took) = process.terminate(Duration::from_secs(20));
        assert!(status.success(), "{status:?} on {backend:?}");
        // The grace; then those whose message went out wait for its answer until their
        // deadline (10 s from their start), and all record how they ended within 3 s.
        assert!(took < Duration::from_secs(15), "{took:?} on {backend:?}");
        // Nothing is left leased: the next process may take every receipt at once. Those
        // whose message had gone out count an attempt (the server may have it); the rest
        // are handed back uncounted.
        let receipts = db.list_effects(None, 100).await.expect("db");
        assert_eq!(receipts.len(), sessions.len());
        for receipt in &receipts {
            assert_eq!(receipt.status, EffectStatus::Pending, "{receipt:?}");
            assert_eq!(receipt.lease_until, None, "{receipt:?} on {backend:?}");
        }
        let counted = receipts.iter().filter(|r| r.attempts == 1).count();
        let uncounted = receipts.iter().filter(|r| r.attempts == 0).count();
        assert_eq!(
            (counted, uncounted),
            (sent, sessions.len() - sent),
            "{receipts:?}"
        );
        smtp.release();

        let _next = Process::start_with(&database.url, stripe.url(), &env).await;
        wait_for_one_receipt_each(&smtp, &sessions, &backend).await;
    }
}

#[actix_web::test]
async fn a_deploy_during_a_slow_smtp_conversation_waits_for_its_answer_and_repeats_no_receipt() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let smtp = SmtpServer::start();
        // Slow, not stalled: every message is answered 3 s after its data, well within
        // the attempt's time, and well past the shutdown's grace.
        smtp.slow_down(Duration::from_secs(3));
        let env = [
            ("SMTP_URL", smtp.url()),
            ("EFFECT_TIMEOUT_SECS", "20".into()),
            ("SHUTDOWN_GRACE_SECS", "1".into()),
        ];
        let process = Process::start_with(&database.url, stripe.url(), &env).await;
        let sessions = paid_sessions(&stripe, "Bowl", 3000, 3);
        deliver_each(&stripe, &process, &sessions).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while smtp.answering() == 0 {
            assert!(Instant::now() < deadline, "no message reached the server");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let (status, _) = process.terminate(Duration::from_secs(30));
        assert!(status.success(), "{status:?} on {backend:?}");
        // What the server took was answered before the exit, and recorded as sent.
        let accepted = smtp.accepted().len();
        assert!(accepted >= 1, "on {backend:?}");
        let db = connect(&database.url).await;
        let receipts = db.list_effects(None, 10).await.expect("db");
        let done = receipts
            .iter()
            .filter(|r| r.status == EffectStatus::Done)
            .count();
        assert_eq!(done, accepted, "{receipts:?} on {backend:?}");
        assert!(
            receipts.iter().all(|r| r.lease_until.is_none()),
            "{receipts:?}"
        );

        // The next process sends the rest, and nothing twice.
        smtp.slow_down(Duration::ZERO);
        let _next = Process::start_with(&database.url, stripe.url(), &env).await;
        wait_for_one_receipt_each(&smtp, &sessions, &backend).await;
    }
}

#[actix_web::test]
async fn effects_in_flight_at_a_kill_9_are_leased_for_seconds_only() {
    for backend in backends() {
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        let smtp = SmtpServer::start();
        smtp.hold();
        let env = [
            ("SMTP_URL", smtp.url()),
            ("EFFECT_TIMEOUT_SECS", "60".into()),
            ("EFFECT_LEASE_SECS", "3".into()),
        ];
        let process = Process::start_with(&database.url, stripe.url(), &env).await;
        let sessions = paid_sessions(&stripe, "Rug", 9000, 5);
        deliver_each(&stripe, &process, &sessions).await;
        // Every receipt under way: one message held unanswered, the others waiting for
        // its record before they go.
        smtp.wait_data(sessions.len(), 1).await;
        smtp.wait_held(1).await;
        // Held past the first lease: the attempts' heartbeats keep their leases alive.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let db = connect(&database.url).await;
        let leased = db.list_effects(None, 100).await.expect("db");
        process.kill_9();
        let killed_at = now_ms();
        for effect in &leased {
            let until = effect.lease_until.expect("leased while in flight");
            assert!(until > killed_at - 1000, "{effect:?}: renewed while it ran");
            assert!(until <= killed_at + 3000, "{effect:?}: a lease of seconds");
            assert_eq!(effect.attempts, 1, "{effect:?}");
        }
        smtp.release();

        let _next = Process::start_with(&database.url, stripe.url(), &env).await;
        wait_for_one_receipt_each(&smtp, &sessions, &backend).await;
        let id = SessionId::parse(&sessions[0]).expect("id");
        let effects = db.list_effects_of(&id).await.expect("db");
        assert_eq!(effects[0].status, EffectStatus::Done);
        assert_eq!(effects[0].attempts, 2, "taken over once its lease ran out");
    }
}
