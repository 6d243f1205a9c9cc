//! The steps a reversal shares with the outbox: stock put back for goods that never left,
//! and an effect enqueued once. Macros, so that they run inside any open transaction on
//! either backend.

/// Puts back, once, the stock session `$id` took for goods that never left: unless the
/// warehouse accepted its shipment (and has not cancelled it). Units that refunds gave
/// back by item and that came back already, or were kept from the shipment, are left out.
/// Units a refund asked the warehouse for and still waits on come back with the rest, and
/// are marked returned here, so the warehouse's later yes to them puts nothing back again.
/// Inside the caller's transaction, on either backend; evaluates to `()` or returns the
/// error.
macro_rules! return_stock {
    ($conn:ident, $id:expr, $now:expr) => {{
        use $crate::db::schema::{item_returns, shipments, stock_movements};
        use $crate::domain::ShipmentStatus;
        let (id, now): (&str, i64) = ($id, $now);
        let shipped = shipments::table
            .filter(shipments::session_id.eq(id))
            .filter(shipments::status.eq(ShipmentStatus::Submitted));
        let mut back = diesel::update(
            stock_movements::table
                .filter(stock_movements::session_id.eq(id))
                .filter(stock_movements::applied_at.is_not_null())
                .filter(stock_movements::returned_at.is_null())
                .filter(diesel::dsl::not(diesel::dsl::exists(shipped))),
        )
        .set(stock_movements::returned_at.eq(now))
        .returning((stock_movements::sku, stock_movements::quantity))
        .get_results::<(String, i64)>($conn)
        .await?;
        let skus: Vec<&str> = back.iter().map(|(sku, _)| sku.as_str()).collect();
        // Units still waiting for the warehouse's answer to a refund come back with the
        // rest: stamped now, the answer finds nothing left to put back.
        let covered = diesel::update(
            item_returns::table
                .filter(item_returns::session_id.eq(id))
                .filter(item_returns::sku.eq_any(&skus))
                .filter(item_returns::asked.eq(true))
                .filter(item_returns::returned_at.is_null()),
        )
        .set(item_returns::returned_at.eq(now))
        .returning((item_returns::sku, item_returns::quantity))
        .get_results::<(String, i64)>($conn)
        .await?;
        // Units that came back, or were kept, by item went back their own way.
        let by_item = item_returns::table
            .filter(item_returns::session_id.eq(id))
            .filter(
                item_returns::returned_at
                    .is_not_null()
                    .or(item_returns::asked.eq(false)),
            )
            .select((item_returns::sku, item_returns::quantity))
            .load::<(String, i64)>($conn)
            .await?;
        let units = |rows: &[(String, i64)], sku: &str| -> i64 {
            rows.iter()
                .filter(|(named, _)| named == sku)
                .map(|(_, units)| units)
                .sum()
        };
        for (sku, quantity) in &mut back {
            *quantity -= units(&by_item, sku) - units(&covered, sku);
        }
        back.retain(|(_, quantity)| *quantity > 0);
        // SKU order, as the stock is taken: concurrent sessions never deadlock.
        back.sort();
        $crate::db::refunds::restock!($conn, back, now);
    }};
}
pub(crate) use return_stock;

/// Puts `$units`, pairs of SKU and quantity, back into stock in the order given: callers
/// give SKU order, as the stock is taken, so that concurrent sessions never deadlock.
/// Inside the caller's transaction, on either backend; evaluates to `()` or returns the
/// error.
macro_rules! restock {
    ($conn:ident, $units:expr, $now:expr) => {{
        use $crate::db::schema::inventory;
        let now: i64 = $now;
        for (sku, quantity) in $units {
            diesel::update(inventory::table.find(sku))
                .set((
                    inventory::stock.eq(inventory::stock + quantity),
                    inventory::updated_at.eq(now),
                ))
                .execute($conn)
                .await?;
        }
    }};
}
pub(crate) use restock;

/// Enqueues session `$id`'s effect of `$kind` with `$subject` and `$body`, due at once,
/// unless it is enqueued already; evaluates to whether this call enqueued it, or returns
/// the error. Inside the caller's transaction, on either backend.
macro_rules! enqueue {
    ($conn:ident, $id:expr, $kind:expr, $subject:expr, $body:expr, $now:expr) => {{
        use $crate::db::schema::effects;
        use $crate::db::types::DbNow;
        use $crate::domain::EffectStatus;
        let (subject, body, now): (&str, Option<&str>, i64) = ($subject, $body, $now);
        diesel::insert_into(effects::table)
            .values((
                effects::session_id.eq($id),
                effects::kind.eq($kind),
                effects::subject.eq(subject),
                effects::body.eq(body),
                effects::status.eq(EffectStatus::Pending),
                effects::attempts.eq(0),
                effects::next_attempt_at.eq(DbNow::now()),
                effects::created_at.eq(now),
                effects::updated_at.eq(now),
            ))
            .on_conflict_do_nothing()
            .execute($conn)
            .await?
            == 1
    }};
}
pub(crate) use enqueue;

/// Whether session `$id`'s shipment request was tried and may have reached the warehouse:
/// a request still to be done that has had an attempt, or one that failed (its error
/// stays through an operator's revival, which starts a fresh count). Evaluates to the
/// answer, or returns the error.
macro_rules! shipment_tried {
    ($conn:ident, $id:expr) => {{
        use $crate::db::schema::effects;
        use $crate::domain::{EffectKind, EffectStatus};
        effects::table
            .filter(effects::session_id.eq($id))
            .filter(effects::kind.eq(EffectKind::Shipment))
            .filter(effects::status.eq_any([EffectStatus::Pending, EffectStatus::Held]))
            .filter(
                effects::attempts
                    .gt(0)
                    .or(effects::last_error.is_not_null()),
            )
            .count()
            .get_result::<i64>($conn)
            .await?
            > 0
    }};
}
pub(crate) use shipment_tried;

/// Cancels session `$id`'s effects of the kinds `$kinds` that are still to be done and
/// that no attempt holds: they are never carried out; one under way finishes. Returns the
/// error, if any.
macro_rules! cancel_unheld {
    ($conn:ident, $id:expr, $kinds:expr, $now:expr) => {{
        use $crate::db::schema::effects;
        use $crate::db::types::DbNow;
        use $crate::domain::EffectStatus;
        diesel::update(
            effects::table
                .filter(effects::session_id.eq($id))
                .filter(effects::kind.eq_any($kinds))
                .filter(effects::status.eq_any([EffectStatus::Pending, EffectStatus::Held]))
                .filter(
                    effects::lease_until
                        .is_null()
                        .or(effects::lease_until.le(DbNow::now().nullable())),
                ),
        )
        .set((
            effects::status.eq(EffectStatus::Cancelled),
            effects::lease_until.eq(None::<i64>),
            effects::updated_at.eq($now),
        ))
        .execute($conn)
        .await?;
    }};
}
pub(crate) use cancel_unheld;

/// Marks session `$id`'s shipment `cancelled` while it is still to be sent (pending,
/// awaiting an operator or held) and no request of it is still to be done: one under way
/// records its own end. Returns the error, if any.
macro_rules! cancel_shipment {
    ($conn:ident, $id:expr, $now:expr) => {{
        use $crate::db::schema::{effects, shipments};
        use $crate::domain::{EffectKind, EffectStatus, ShipmentStatus};
        let requesting = effects::table
            .filter(effects::session_id.eq($id))
            .filter(effects::kind.eq(EffectKind::Shipment))
            .filter(effects::status.eq_any([EffectStatus::Pending, EffectStatus::Held]));
        diesel::update(
            shipments::table
                .filter(shipments::session_id.eq($id))
                .filter(shipments::status.eq_any([
                    ShipmentStatus::Pending,
                    ShipmentStatus::AwaitingManualHandling,
                    ShipmentStatus::Held,
                ]))
                .filter(diesel::dsl::not(diesel::dsl::exists(requesting))),
        )
        .set((
            shipments::status.eq(ShipmentStatus::Cancelled),
            shipments::updated_at.eq($now),
        ))
        .execute($conn)
        .await?;
    }};
}
pub(crate) use cancel_shipment;
