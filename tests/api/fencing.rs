//! Fencing: every write of an attempt holds only while the effect is still leased to it.

use std::time::Duration;

use fulfilld::catalog::Catalog;
use fulfilld::db::effects::Aside;
use fulfilld::db::sessions::Record;
use fulfilld::domain::{
    EffectKind, EffectStatus, LineItem, NewsKind, PaymentStatus, Progress, RefundStatus,
    ReversalNews, SessionId, SessionState, SessionSummary, Status, Tell,
};

use crate::faults::connect;
use crate::helpers::backends;

#[actix_web::test]
async fn an_attempt_whose_lease_passed_on_changes_nothing() {
    for backend in backends() {
        let database = backend.fresh_database().await;
        let (db, catalog) = stocked(&database.url).await;
        let id = SessionId::parse("cs_test_fenced").expect("id");
        record_physical(&db, &catalog, &id).await;

        // The first attempt's lease lapses (1 ms) and a second attempt claims the effect.
        let lapsed = Duration::from_millis(1);
        let first = db.claim_effects(10, lapsed, &[]).await.expect("db");
        assert_eq!(first.len(), 1, "the inventory effect, on {backend:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A process never claims again what it is itself still attempting.
        let running = [first[0].id];
        let mine = db.claim_effects(10, lapsed, &running).await.expect("db");
        assert!(mine.is_empty(), "{mine:?}");
        let second = db
            .claim_effects(10, Duration::from_secs(60), &[])
            .await
            .expect("db");
        assert_eq!(second.len(), 1);
        let (stale, live) = (first[0].fence(), second[0].fence());
        assert_ne!(stale, live);

        // Every write of the first attempt is refused and changes nothing.
        let wait = Duration::from_secs(1);
        assert!(!db.renew_lease(stale, wait).await.expect("db"));
        assert!(!db.retry_effect(stale, wait, "late").await.expect("db"));
        assert!(!db.bury_effect(stale, "late").await.expect("db"));
        assert!(!db.release_effect(stale, wait).await.expect("db"));
        assert!(!db.complete_effect(stale).await.expect("db"));
        let moved = db.apply_stock_movements(stale, id.as_str(), wait).await;
        assert!(moved.expect("db").is_none());
        assert_eq!(db.stock("TEE-M").await.expect("db"), Some((25, false)));
        let effects = db.list_effects_of(&id).await.expect("db");
        assert_eq!(effects[0].status, EffectStatus::Pending);
        assert_eq!(effects[0].attempts, 2);
        assert!(effects[0].last_error.is_none());

        // The attempt that holds the lease moves the stock, once.
        let moved = db.apply_stock_movements(live, id.as_str(), wait).await;
        assert_eq!(moved.expect("db").expect("fence holds").len(), 1);
        let again = db.apply_stock_movements(live, id.as_str(), wait).await;
        assert!(
            again.expect("db").is_none(),
            "done: the fence no longer holds"
        );
        assert_eq!(db.stock("TEE-M").await.expect("db"), Some((23, false)));
        assert_eq!(
            db.list_effects_of(&id).await.expect("db")[0].status,
            EffectStatus::Done
        );
    }
}

/// The database at `url`, its stock seeded from the test catalog, and the catalog.
async fn stocked(url: &str) -> (fulfilld::db::Database, Catalog) {
    let db = connect(url).await;
    let catalog = Catalog::load(std::path::Path::new(crate::helpers::CATALOG)).expect("catalog");
    db.seed_inventory(&catalog).await.expect("db");
    (db, catalog)
}

/// The payment intent [`record_physical`] records `id` with.
fn payment_intent_of(id: &SessionId) -> String {
    format!("pi_{}", id.as_str().trim_start_matches("cs_test_"))
}

/// Records `id` fulfilled, with one T-shirt to ship: one inventory effect, due at once.
async fn record_physical(db: &fulfilld::db::Database, catalog: &Catalog, id: &SessionId) {
    let item = LineItem {
        id: "li_1".into(),
        price_id: Some("price_tee_m".into()),
        product_id: None,
        description: "T-shirt".into(),
        quantity: 2,
        currency: "usd".into(),
        unit_amount: Some(2500),
        amount_subtotal: 5000,
        amount_total: 5000,
    };
    let summary = SessionSummary {
        id: id.clone(),
        account: None,
        livemode: false,
        state: SessionState::Complete,
        payment_status: PaymentStatus::Paid,
        currency: Some("usd".into()),
        amount_total: Some(5000),
        customer_email: None,
        payment_intent: Some(payment_intent_of(id)),
        shipping_address: None,
        created: None,
    };
    let items = [item];
    let plan = catalog.plan(id, &items);
    db.record(Record {
        summary: &summary,
        status: Status::Fulfilled,
        line_items: &items,
        plan: &plan,
        tell: Tell::default(),
        elsewhere: false,
        event: None,
        trace: None,
    })
    .await
    .expect("recorded");
}

/// Attempts that end together are written in one batch; each is told its own outcome,
/// and only those whose lease still holds are done, even beside a stale copy of
/// themselves.
#[actix_web::test]
async fn completions_written_together_are_each_fenced_on_their_own() {
    for backend in backends() {
        let database = backend.fresh_database().await;
        let (db, catalog) = stocked(&database.url).await;
        let ids: Vec<SessionId> = (0..3)
            .map(|n| SessionId::parse(&format!("cs_test_batch{n}")).expect("id"))
            .collect();
        for id in &ids {
            record_physical(&db, &catalog, id).await;
        }
        let first = db
            .claim_effects(10, Duration::from_millis(1), &[])
            .await
            .expect("db");
        assert_eq!(first.len(), 3, "one inventory effect each, on {backend:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = db
            .claim_effects(10, Duration::from_secs(60), &[])
            .await
            .expect("db");
        assert_eq!(second.len(), 3);
        let stale = |id: i64| first.iter().find(|e| e.id == id).expect("claimed").fence();
        let (a, b, c) = (&second[0], &second[1], &second[2]);

        // a: the stale and the live attempt in one batch; b: live; c: only stale.
        let batch = [stale(a.id), a.fence(), b.fence(), stale(c.id)];
        let done = db.complete_effects(&batch).await.expect("db");
        assert_eq!(done, [false, true, true, false], "on {backend:?}");
        let status = async |effect: &fulfilld::db::effects::ClaimedEffect| {
            let id = SessionId::parse(&effect.session_id).expect("id");
            db.list_effects_of(&id).await.expect("db")[0].status
        };
        assert_eq!(status(a).await, EffectStatus::Done);
        assert_eq!(status(b).await, EffectStatus::Done);
        assert_eq!(
            status(c).await,
            EffectStatus::Pending,
            "a stale fence did nothing"
        );

        // Done is done: the same batch again changes nothing and says so.
        let again = db.complete_effects(&batch).await.expect("db");
        assert_eq!(again, [false; 4], "on {backend:?}");
    }
}

/// Stores and applies a refund of session `id`'s whole 50.00, told as refund `refund`.
async fn refund_in_full(db: &fulfilld::db::Database, id: &SessionId, refund: &str) {
    let news = ReversalNews {
        id: refund.into(),
        kind: NewsKind::Refund,
        payment_intent: payment_intent_of(id),
        amount: 5000,
        status: Progress::Refund(RefundStatus::Succeeded),
        items: None,
        event_created: 1,
    };
    assert!(db.store_refund(&news).await.expect("db"));
    let applied = db
        .apply_reversals(id, &news.payment_intent, Tell::default())
        .await;
    assert_eq!(
        applied.expect("db").expect("applied").after,
        Status::Refunded
    );
}

/// An attempt under way when a full refund comes is left to finish. If it hands the
/// effect back instead, the next claim sees the refund, and the effect is cancelled rather
/// than carried out: no stock moves for a refunded order.
#[actix_web::test]
async fn an_effect_handed_back_after_a_full_refund_is_cancelled_when_claimed_again() {
    for backend in backends() {
        let database = backend.fresh_database().await;
        let (db, catalog) = stocked(&database.url).await;
        let id = SessionId::parse("cs_test_refundedlater").expect("id");
        record_physical(&db, &catalog, &id).await;
        let lease = Duration::from_secs(60);
        let claimed = db.claim_effects(10, lease, &[]).await.expect("db");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].set_aside(), None);

        refund_in_full(&db, &id, "re_later").await;
        let pending = (EffectKind::Inventory, EffectStatus::Pending);
        assert_eq!(
            db.effects_of(&id).await.expect("db"),
            [pending],
            "left to its attempt"
        );

        assert!(
            db.release_effect(claimed[0].fence(), Duration::ZERO)
                .await
                .expect("db")
        );
        let again = db.claim_effects(10, lease, &[]).await.expect("db");
        let aside = again[0].set_aside();
        assert_eq!(aside, Some(EffectStatus::Cancelled), "on {backend:?}");
        let cancel = db.set_aside(again[0].fence(), id.as_str(), again[0].kind);
        assert_eq!(
            cancel.await.expect("db"),
            Aside::Done(EffectStatus::Cancelled)
        );
        let cancelled = (EffectKind::Inventory, EffectStatus::Cancelled);
        assert_eq!(db.effects_of(&id).await.expect("db"), [cancelled]);
        assert_eq!(db.stock("TEE-M").await.expect("db"), Some((25, false)));
    }
}

/// A stock movement under way when a full refund is applied finishes, and its stock goes
/// straight back: the refund put back only what had moved by then.
#[actix_web::test]
async fn stock_moved_by_an_attempt_that_a_full_refund_overtook_goes_back() {
    for backend in backends() {
        let database = backend.fresh_database().await;
        let (db, catalog) = stocked(&database.url).await;
        let id = SessionId::parse("cs_test_refundedmidway").expect("id");
        record_physical(&db, &catalog, &id).await;
        let claimed = db
            .claim_effects(10, Duration::from_secs(60), &[])
            .await
            .expect("db");
        assert_eq!(claimed.len(), 1);

        refund_in_full(&db, &id, "re_midway").await;

        let moved = db
            .apply_stock_movements(claimed[0].fence(), id.as_str(), Duration::from_secs(5))
            .await;
        assert!(moved.expect("db").is_some(), "the attempt's lease held");
        assert_eq!(
            db.stock("TEE-M").await.expect("db"),
            Some((25, false)),
            "on {backend:?}"
        );
    }
}

/// A full refund that cancels a stock movement no attempt had made gives its units back to
/// what checkouts may hold: the movement will never be applied.
#[actix_web::test]
async fn a_stock_movement_a_full_refund_cancelled_holds_no_units_back() {
    for backend in backends() {
        let database = backend.fresh_database().await;
        let (db, catalog) = stocked(&database.url).await;
        let id = SessionId::parse("cs_test_refundedunmoved").expect("id");
        record_physical(&db, &catalog, &id).await;
        assert_eq!(
            db.available("TEE-M").await.expect("db"),
            23,
            "on {backend:?}"
        );

        refund_in_full(&db, &id, "re_unmoved").await;

        let cancelled = (EffectKind::Inventory, EffectStatus::Cancelled);
        assert_eq!(db.effects_of(&id).await.expect("db"), [cancelled]);
        assert_eq!(db.stock("TEE-M").await.expect("db"), Some((25, false)));
        assert_eq!(
            db.available("TEE-M").await.expect("db"),
            25,
            "on {backend:?}"
        );
    }
}
