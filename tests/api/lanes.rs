//! The acknowledgement lane: nothing another session or replica holds, and no backlog of
//! background work, keeps a delivery from its answer; and of several replicas, one
//! carries each event out.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use fulfilld::sandbox::StripeDouble;
use futures_util::future::join_all;

use crate::helpers::{
    Process, assert_each_fulfilled_once, paid_sessions, post_webhook, postgres, sign, spawn_app,
};

/// The slowest answer a delivery may get while another session holds rows: well inside
/// Stripe's ten seconds, and far from the lock's own release.
const PROMPT: Duration = Duration::from_secs(2);
/// `WEBHOOK_WORKERS`' default: events a replica carries out at once.
const WORKERS: usize = 64;

/// Posts the signed `completed` event of each session to `address`, all at once; returns
/// each answer's status and how long it took.
async fn deliver_all(
    stripe: &StripeDouble,
    address: &str,
    sessions: &[String],
) -> Vec<(u16, Duration)> {
    let client = reqwest::Client::new();
    let deliveries = sessions.iter().map(|session| {
        let body = stripe.event_payload(
            &format!("evt_{session}"),
            "checkout.session.completed",
            session,
        );
        let client = &client;
        async move {
            let started = Instant::now();
            let signature = sign(&body);
            let status = post_webhook(client, address, body, Some(signature))
                .await
                .status()
                .as_u16();
            (status, started.elapsed())
        }
    });
    join_all(deliveries).await
}

#[actix_web::test]
async fn rows_locked_by_another_session_do_not_hold_up_acknowledgements() {
    let Some(backend) = postgres("rows_locked_by_another_session_do_not_hold_up_acknowledgements")
    else {
        return;
    };
    let app = spawn_app(&backend).await;
    let held = paid_sessions(&app.stripe, "Book", 1000, 40);
    let fresh = paid_sessions(&app.stripe, "Book", 2000, 40);
    // Stored, but not carried out yet: Stripe's API stalls.
    app.stripe.set_delay(Duration::from_secs(3));
    let first = deliver_all(&app.stripe, &app.address, &held).await;
    assert!(first.iter().all(|(status, _)| *status == 200), "{first:?}");

    // Another session (a replica frozen in the middle of marking these events) updates
    // their rows and never commits.
    let mut holder = AsyncPgConnection::establish(app.database_url())
        .await
        .expect("PostgreSQL answers");
    holder
        .batch_execute("BEGIN; UPDATE webhook_events SET last_error = 'held' WHERE true;")
        .await
        .expect("rows locked");

    // Stripe retries the held events and sends new ones, all at once.
    let everything: Vec<String> = held.iter().chain(&fresh).cloned().collect();
    let answers = deliver_all(&app.stripe, &app.address, &everything).await;
    let slowest = answers
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "every delivery acknowledged while the rows are held: {answers:?}"
    );
    assert!(
        slowest < PROMPT,
        "the slowest acknowledgement took {slowest:?} while another session held rows"
    );

    holder
        .batch_execute("ROLLBACK;")
        .await
        .expect("rows released");
    app.stripe.set_delay(Duration::ZERO);
    assert_each_fulfilled_once(app.database_url(), &everything).await;
}

#[actix_web::test]
async fn an_event_kept_waiting_by_another_sessions_lock_is_put_off_not_worn_out() {
    let Some(backend) =
        postgres("an_event_kept_waiting_by_another_sessions_lock_is_put_off_not_worn_out")
    else {
        return;
    };
    let app = spawn_app(&backend).await;
    let sessions = paid_sessions(&app.stripe, "Book", 1000, 1);

    // Another session (a frozen replica) holds the table the fulfilment records into:
    // each attempt meets its lock, waits the pool's lock_timeout (5 s) and is put off.
    let mut holder = AsyncPgConnection::establish(app.database_url())
        .await
        .expect("PostgreSQL answers");
    holder
        .batch_execute("BEGIN; LOCK TABLE checkout_sessions IN SHARE ROW EXCLUSIVE MODE;")
        .await
        .expect("table locked");
    let answers = deliver_all(&app.stripe, &app.address, &sessions).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );

    // Long enough for two attempts to meet the lock.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (attempts, last_error) = event_attempts(app.database_url(), &sessions[0]).await;
    holder
        .batch_execute("ROLLBACK;")
        .await
        .expect("table released");
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("lock timeout")),
        "the event shows why it waits: {last_error:?}"
    );
    assert_eq!(attempts, 0, "attempts that met a lock are not counted");
    assert_each_fulfilled_once(app.database_url(), &sessions).await;
}

/// The attempts counted on the event of `session`, and its last error.
async fn event_attempts(url: &str, session: &str) -> (i32, Option<String>) {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        attempts: i32,
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        last_error: Option<String>,
    }
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .expect("PostgreSQL answers");
    let row = diesel::sql_query("SELECT attempts, last_error FROM webhook_events WHERE id = $1")
        .bind::<Text, _>(format!("evt_{session}"))
        .get_result::<Row>(&mut conn)
        .await
        .expect("the event is stored");
    (row.attempts, row.last_error)
}

/// How many of the process's connections sit inside a transaction.
async fn open_transactions(admin: &mut AsyncPgConnection, pid: u32) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS count FROM pg_stat_activity \
         WHERE application_name LIKE '%:' || $1 AND state LIKE 'idle in transaction%'",
    )
    .bind::<Text, _>(pid.to_string())
    .get_result::<Count>(admin)
    .await
    .expect("pg_stat_activity readable")
    .count
}

#[actix_web::test]
async fn a_frozen_replica_never_stops_the_others_acknowledging_and_repeats_nothing() {
    let Some(backend) =
        postgres("a_frozen_replica_never_stops_the_others_acknowledging_and_repeats_nothing")
    else {
        return;
    };
    let stripe = StripeDouble::start().expect("Stripe double starts");
    let database = backend.fresh_database().await;
    let frozen = Process::start(&database.url, stripe.url()).await;
    let live = Process::start(&database.url, stripe.url()).await;
    let mut admin = AsyncPgConnection::establish(&database.url)
        .await
        .expect("PostgreSQL answers");
    let first = paid_sessions(&stripe, "Book", 1000, 100);
    let second = paid_sessions(&stripe, "Book", 5000, 100);

    // The first replica is busy with the first half when it is frozen: in the middle of
    // its transactions, as often as that can be caught.
    let busy = deliver_all(&stripe, &frozen.address, &first);
    let freeze = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        frozen.signal("STOP");
        for _ in 0..50 {
            if open_transactions(&mut admin, frozen.pid()).await > 0 {
                return true;
            }
            frozen.signal("CONT");
            tokio::time::sleep(Duration::from_millis(5)).await;
            frozen.signal("STOP");
        }
        false
    };
    let (_, caught_in_transaction) =
        tokio::join!(tokio::time::timeout(Duration::from_secs(1), busy), freeze);
    eprintln!("frozen inside a transaction: {caught_in_transaction}");

    // Stripe's retries of everything the frozen replica had, and the new deliveries, go
    // to the live one.
    let everything: Vec<String> = first.iter().chain(&second).cloned().collect();
    let answers = deliver_all(&stripe, &live.address, &everything).await;
    let slowest = answers
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "every delivery acknowledged by the live replica: {answers:?}"
    );
    assert!(
        slowest < PROMPT,
        "the slowest acknowledgement took {slowest:?}"
    );
    assert_each_fulfilled_once(&database.url, &everything).await;

    // Thawed, the frozen replica repeats nothing: it records nothing and sends no receipt
    // again (one per session between the two replicas). The only Stripe calls it may
    // still make are the reads it had handed to its HTTP client before it froze, at most
    // one per session and one per worker. A delivery to it afterwards, carried out,
    // shows that it is working again.
    let before: Vec<usize> = everything.iter().map(|s| stripe.calls(s)).collect();
    frozen.signal("CONT");
    frozen.wait_ready().await;
    let sentinel = paid_sessions(&stripe, "Book", 9000, 1);
    let answers = deliver_all(&stripe, &frozen.address, &sentinel).await;
    assert_eq!(answers[0].0, 200);
    assert_each_fulfilled_once(&database.url, &sentinel).await;
    assert_each_fulfilled_once(&database.url, &everything).await;
    let again: Vec<usize> = everything
        .iter()
        .zip(&before)
        .map(|(session, before)| stripe.calls(session) - before)
        .collect();
    assert!(
        again.iter().all(|calls| *calls <= 1) && again.iter().sum::<usize>() <= WORKERS,
        "Stripe calls after the thaw, per session: {again:?}"
    );
    let mut mail = frozen.mail_files();
    mail.extend(live.mail_files());
    let sent = mail.len();
    mail.sort();
    mail.dedup();
    let expected = everything.len() + 1;
    assert_eq!(
        (sent, mail.len()),
        (expected, expected),
        "one receipt per session, sent by one replica"
    );
}
