//! The acknowledgement lane's statement on PostgreSQL, on a database of its own on the
//! server `TEST_DATABASE_URL` names; skipped when it names none.

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{Stored, StoredEvent, store_events_postgres};
use crate::db::{DatabaseUrl, migrate};

fn event(id: &str) -> StoredEvent {
    StoredEvent {
        id: id.to_owned(),
        event_type: "checkout.session.completed".to_owned(),
        session_id: format!("cs_{id}"),
        livemode: false,
        payload: "{}".to_owned(),
        received_at: 0,
        processed_at: None,
        account: None,
    }
}

#[derive(diesel::QueryableByName)]
struct Reads {
    /// Rows read by scans of the whole table.
    #[diesel(sql_type = BigInt)]
    scanned: i64,
    /// Lookups through an index: the control, which shows the counts are kept.
    #[diesel(sql_type = BigInt)]
    looked_up: i64,
}

/// The plan PostgreSQL caches for the lane's statement is made while the table is new and
/// empty; thousands of events later, storing a batch must still look up only its own ids,
/// not read the table.
#[tokio::test]
async fn the_lane_stores_a_batch_without_reading_the_events_stored_before() {
    let Some(server) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("skipped: it needs PostgreSQL (TEST_DATABASE_URL)");
        return;
    };
    let name = format!("fulfilld_test_{:016x}", fastrand::u64(..));
    let mut admin = AsyncPgConnection::establish(&server)
        .await
        .expect("TEST_DATABASE_URL accepts connections");
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("test database created");
    let (base, query) = server.split_once('?').unwrap_or((&server, ""));
    let (prefix, _) = base.rsplit_once('/').expect("URL has a path");
    let url = match query {
        "" => format!("{prefix}/{name}"),
        query => format!("{prefix}/{name}?{query}"),
    };
    migrate(&DatabaseUrl::Postgres(url.clone()))
        .await
        .expect("migrations apply");
    let mut conn = AsyncPgConnection::establish(&url)
        .await
        .expect("test database accepts connections");

    // The plan PostgreSQL settles on after five runs, made while the table is empty.
    diesel::sql_query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .expect("plan cache mode set");
    for run in 0..3 {
        let stored = store_events_postgres(&mut conn, &[event(&format!("evt_early_{run}"))])
            .await
            .expect("event stored");
        assert_eq!(stored, [Stored::New]);
    }
    // Every other one processed.
    diesel::sql_query(
        "INSERT INTO webhook_events \
         (id, event_type, session_id, livemode, payload, received_at, processed_at) \
         SELECT 'evt_stored_' || g, 'checkout.session.completed', 'cs_' || g, false, '{}', 0, \
         CASE WHEN g % 2 = 0 THEN 1 END FROM generate_series(1, 20000) g",
    )
    .execute(&mut conn)
    .await
    .expect("events stored in bulk");

    // The rows read by scans, counted for this transaction alone.
    diesel::sql_query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("transaction begins");
    let batch = ["evt_late", "evt_stored_7", "evt_stored_8", "evt_late"].map(event);
    let stored = store_events_postgres(&mut conn, &batch)
        .await
        .expect("events stored");
    let reads = diesel::sql_query(
        "SELECT COALESCE(seq_tup_read, 0) AS scanned, COALESCE(idx_scan, 0) AS looked_up \
         FROM pg_stat_xact_user_tables WHERE relname = 'webhook_events'",
    )
    .get_result::<Reads>(&mut conn)
    .await
    .expect("statistics read");
    diesel::sql_query("ROLLBACK")
        .execute(&mut conn)
        .await
        .expect("transaction rolled back");
    drop(conn);
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("test database dropped");

    assert_eq!(
        stored,
        [
            Stored::New,
            Stored::Duplicate { processed: false },
            Stored::Duplicate { processed: true },
            Stored::Duplicate { processed: false },
        ]
    );
    assert!(
        reads.looked_up > 0,
        "no lookup was counted: {}",
        reads.looked_up
    );
    assert_eq!(
        reads.scanned, 0,
        "storing four events read {} stored events by scanning the table",
        reads.scanned
    );
}
