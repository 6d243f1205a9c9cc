//! The acknowledgement lane's statement on PostgreSQL, on a database of its own on the
//! server `TEST_DATABASE_URL` names; skipped when it names none.

use super::{Stored, StoredEvent, store_events_postgres};
use crate::db::test_server::{TestDatabase, reads, run};

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

/// The plan PostgreSQL caches for the lane's statement is made while the table is new and
/// empty; thousands of events later, storing a batch must still look up only its own ids,
/// not read the table.
#[tokio::test]
async fn the_lane_stores_a_batch_without_reading_the_events_stored_before() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut conn = database.connect_generic(&["webhook_events"]).await;
    for early in 0..3 {
        let stored = store_events_postgres(&mut conn, &[event(&format!("evt_early_{early}"))])
            .await
            .expect("event stored");
        assert_eq!(stored, [Stored::New]);
    }
    // Every other one processed.
    run(
        &mut conn,
        "INSERT INTO webhook_events \
         (id, event_type, session_id, livemode, payload, received_at, processed_at) \
         SELECT 'evt_stored_' || g, 'checkout.session.completed', 'cs_' || g, false, '{}', 0, \
         CASE WHEN g % 2 = 0 THEN 1 END FROM generate_series(1, 20000) g",
    )
    .await;

    // The rows read, counted for this transaction alone.
    run(&mut conn, "BEGIN").await;
    let batch = ["evt_late", "evt_stored_7", "evt_stored_8", "evt_late"].map(event);
    let stored = store_events_postgres(&mut conn, &batch)
        .await
        .expect("events stored");
    let reads = reads(&mut conn, "webhook_events").await;
    run(&mut conn, "ROLLBACK").await;
    drop(conn);
    database.remove().await;

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
