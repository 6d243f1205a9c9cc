//! The one-statement record on PostgreSQL, on a database of its own on the server
//! `TEST_DATABASE_URL` names; skipped when it names none. Its plan, made while the tables
//! were empty, must still find the session's holds and its event by their keys however
//! many other holds and events wait.

use diesel_async::AsyncPgConnection;

use super::rows::{SessionRow, Write};
use super::whole::{RecordWhole, Whole};
use crate::db::test_server::{TestDatabase, reads, run, store_events};
use crate::domain::Status;

/// Records session `id` fulfilled in one statement on `conn`, taking its holds and
/// marking `event` processed; true when the statement made the session's row.
async fn record_fulfilled(conn: &mut AsyncPgConnection, id: &str, event: &str) -> bool {
    let row = SessionRow {
        id,
        status: Status::Fulfilled,
        livemode: false,
        currency: Some("usd"),
        amount_total: Some(1000),
        customer_email: None,
        shipping_address: None,
        fulfilled_at: Some(1),
        created_at: 1,
        updated_at: 1,
        account: None,
        payment_intent: Some("pi_1"),
    };
    let writes = [Write::Reservations {
        session: id,
        state: "taken",
        now: 1,
    }];
    let whole = Whole {
        row: &row,
        writes: &writes,
        event: Some(event),
        fulfils: Some("pi_1"),
    };
    conn.record_whole(&whole).await.expect("recorded")
}

#[tokio::test]
async fn a_record_in_one_statement_reads_its_own_holds_and_event_however_many_wait() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let tables = ["reservations", "webhook_events", "checkout_sessions"];
    let mut conn = database.connect_generic(&tables).await;
    for n in 0..3 {
        let id = format!("cs_empty{n}");
        assert!(record_fulfilled(&mut conn, &id, "evt_none").await);
    }
    run(
        &mut conn,
        "INSERT INTO reservations (id, sku, quantity, session_id, state, expires_at, created_at) \
         SELECT 'res_' || g, 'TEE-M', 1, 'cs_' || g, 'held', 9e15, 0 \
         FROM generate_series(1, 20000) g",
    )
    .await;
    store_events(&mut conn, 20_000).await;

    run(&mut conn, "BEGIN").await;
    let recorded = record_fulfilled(&mut conn, "cs_7", "evt_7").await;
    let holds = reads(&mut conn, "reservations").await;
    let events = reads(&mut conn, "webhook_events").await;
    run(&mut conn, "ROLLBACK").await;
    drop(conn);
    database.remove().await;

    assert!(recorded, "the statement made the session's row");
    for (table, reads) in [("holds", holds), ("events", events)] {
        assert!(
            reads.looked_up > 0,
            "no lookup of {table} was counted: {reads:?}"
        );
        assert_eq!(
            reads.scanned, 0,
            "the record scanned the {table}: {reads:?}"
        );
        assert!(
            reads.fetched < 100,
            "the record fetched {} {table}: {reads:?}",
            reads.fetched
        );
    }
}
