//! The claims on PostgreSQL, events' and effects', and the marks of effects done, on a
//! database of their own on the server `TEST_DATABASE_URL` names; skipped when it names none.
//! PostgreSQL caches a prepared statement's plan; one made while the tables were empty must
//! still read only the rows a claim or a mark is about, however many others wait.

use std::time::Duration;

use super::{claim_events_postgres, renew_event_claims_postgres};
use crate::db::effects::{Fence, claim_effects_postgres, complete_effects_postgres};
use crate::db::test_server::{TestDatabase, reads, run, store_events, store_sessions};

const LEASE: Duration = Duration::from_secs(30);

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|&id| id.to_owned()).collect()
}

/// A replica claims and renews the few events its deliveries stored, while 20,000 others
/// wait: it must read those few, not walk the waiting ones.
#[tokio::test]
async fn a_claim_reads_its_own_events_however_many_wait() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut conn = database.connect_generic(&["webhook_events"]).await;
    for _ in 0..3 {
        let claimed = claim_events_postgres(&mut conn, &ids(&["evt_none"]), "r1", 0, LEASE)
            .await
            .expect("claimed");
        assert!(claimed.is_empty());
        let renewed = renew_event_claims_postgres(&mut conn, &ids(&["evt_none"]), "r1", LEASE)
            .await
            .expect("renewed");
        assert_eq!(renewed, 0);
    }
    store_events(&mut conn, 20_000).await;
    // One processed, one claimed by a replica whose lease holds, one by a replica whose
    // lease ran out, one not due yet.
    for sql in [
        "UPDATE webhook_events SET processed_at = 1 WHERE id = 'evt_2'",
        "UPDATE webhook_events SET claimed_by = 'r2', lease_until = 9e15 WHERE id = 'evt_3'",
        "UPDATE webhook_events SET claimed_by = 'r2', lease_until = 1 WHERE id = 'evt_4'",
        "UPDATE webhook_events SET next_attempt_at = 9e15 WHERE id = 'evt_5'",
    ] {
        run(&mut conn, sql).await;
    }

    run(&mut conn, "BEGIN").await;
    let asked = ids(&[
        "evt_1", "evt_2", "evt_3", "evt_4", "evt_5", "evt_none", "evt_1",
    ]);
    let claimed = claim_events_postgres(&mut conn, &asked, "r1", 1_000, LEASE)
        .await
        .expect("claimed");
    let renewed = renew_event_claims_postgres(&mut conn, &asked, "r1", LEASE)
        .await
        .expect("renewed");
    let reads = reads(&mut conn, "webhook_events").await;
    run(&mut conn, "ROLLBACK").await;
    drop(conn);
    database.remove().await;

    let mut claimed = claimed;
    claimed.sort();
    assert_eq!(claimed, ids(&["evt_1", "evt_4"]));
    assert_eq!(renewed, 2, "the renewal renews the two claimed");
    assert!(reads.looked_up > 0, "no lookup was counted: {reads:?}");
    assert_eq!(reads.scanned, 0, "the claim scanned the table: {reads:?}");
    assert!(
        reads.fetched < 100,
        "claiming and renewing 7 ids fetched {} events: {reads:?}",
        reads.fetched
    );
}

/// A mail outage leaves 20,000 receipts waiting to be retried in an hour; each claim for
/// the few effects due now must read those few, not the 20,000.
#[tokio::test]
async fn an_effect_claim_reads_what_is_due_however_many_wait_for_later() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut conn = database.connect_generic(&["effects"]).await;
    for _ in 0..3 {
        let claimed = claim_effects_postgres(&mut conn, 16, LEASE, &[])
            .await
            .expect("claimed");
        assert!(claimed.is_empty());
    }
    store_sessions(&mut conn, 20_004).await;
    // Due: 1 (in flight here), 2 (leased to another attempt), 3 and 4 (done). Then the
    // 20,000 for later.
    run(
        &mut conn,
        "INSERT INTO effects \
         (id, session_id, kind, status, next_attempt_at, lease_until, created_at, updated_at) \
         SELECT g, 'cs_' || g, 'receipt', CASE WHEN g = 4 THEN 'done' ELSE 'pending' END, \
         CASE WHEN g <= 4 THEN 0 ELSE 9e15 END, CASE WHEN g = 2 THEN 9e15 END, 0, 0 \
         FROM generate_series(1, 20004) g",
    )
    .await;

    run(&mut conn, "BEGIN").await;
    let claimed = claim_effects_postgres(&mut conn, 16, LEASE, &[1])
        .await
        .expect("claimed");
    let reads = reads(&mut conn, "effects").await;
    run(&mut conn, "ROLLBACK").await;
    drop(conn);
    database.remove().await;

    let claimed: Vec<i64> = claimed.iter().map(|effect| effect.id).collect();
    assert_eq!(claimed, [3]);
    assert!(reads.looked_up > 0, "no lookup was counted: {reads:?}");
    assert_eq!(reads.scanned, 0, "the claim scanned the table: {reads:?}");
    assert!(
        reads.fetched < 100,
        "claiming 1 due effect fetched {} effects: {reads:?}",
        reads.fetched
    );
}

/// With the outbox behind in a sale, 20,000 receipts are pending; each attempt that ends
/// marks its own effect done, and must read that one row, not every pending one.
#[tokio::test]
async fn an_effect_marked_done_is_read_alone_however_many_are_pending() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut conn = database.connect_generic(&["effects"]).await;
    let none = Fence { id: 1, lease: 1 };
    for _ in 0..3 {
        let done = complete_effects_postgres(&mut conn, 0, &[none])
            .await
            .expect("marked");
        assert!(done.is_empty());
    }
    store_sessions(&mut conn, 20_000).await;
    run(
        &mut conn,
        "INSERT INTO effects \
         (id, session_id, kind, status, next_attempt_at, lease, lease_until, created_at, \
         updated_at) \
         SELECT g, 'cs_' || g, 'receipt', 'pending', 0, 1, 9e15, 0, 0 \
         FROM generate_series(1, 20000) g",
    )
    .await;

    run(&mut conn, "BEGIN").await;
    let fences = [
        Fence { id: 3, lease: 1 },
        // A lease that is no longer the attempt's.
        Fence { id: 4, lease: 2 },
    ];
    let done = complete_effects_postgres(&mut conn, 0, &fences)
        .await
        .expect("marked");
    let reads = reads(&mut conn, "effects").await;
    run(&mut conn, "ROLLBACK").await;
    drop(conn);
    database.remove().await;

    assert_eq!(done, [(3, 1)]);
    assert!(reads.looked_up > 0, "no lookup was counted: {reads:?}");
    assert_eq!(reads.scanned, 0, "the mark scanned the table: {reads:?}");
    assert!(
        reads.fetched < 100,
        "marking 2 effects fetched {} effects: {reads:?}",
        reads.fetched
    );
}
