//! Physical goods a partial refund names in `metadata.items`: their units given back once
//! per (refund, SKU), inside the transaction that applies the session's refunds.

/// Gives back, once per (refund, SKU), the units of physical goods that the succeeded
/// refunds of `$payment_intent` name in their items, for session `$id` on `$conn`, inside
/// the caller's transaction, which holds the session's row. Evaluates to whether effects
/// were enqueued, or returns the error.
///
/// A refund's units are capped at what the session bought of each SKU, less what earlier
/// refunds (by when they were stored) gave back; a SKU the session has no stock movement
/// for (digital, or not bought) is passed over. Where they go depends on the shipment:
///
/// - Not requested yet (its request never attempted, none under way), or no
///   `SHIPPING_WEBHOOK_URL` (`$tell.warehouse` false) and a shipment the warehouse never
///   accepted: the units go back into stock at once and the shipment request, when sent,
///   leaves them out. A shipment with no units left is cancelled.
/// - Requested (an attempt made or under way, one that failed before an operator's
///   revival, or the warehouse's answer recorded): the warehouse is asked to cancel those units, by a `shipment_cancel` effect whose subject
///   is the refund's id; its yes puts them back into stock. A shipment the warehouse
///   accepted, with no URL to ask it now, keeps its units out of stock for an operator.
///
/// The customer is mailed once per refund that names items the session bought, digital
/// or physical (the `refund_email` effect whose subject is the refund's id), when `$mail`
/// is true.
macro_rules! return_items {
    ($conn:ident, $id:expr, $payment_intent:expr, $tell:expr, $mail:expr, $now:expr) => {{
        use std::collections::HashMap;
        use $crate::db::schema::{
            access_grants, effects, item_returns, refunds, shipments, stock_movements,
        };
        use $crate::domain::{
            EffectKind, NewsKind, RefundStatus, ShipmentStatus, Tell, refunded_items, refunded_skus,
        };
        let (id, payment_intent, tell, mail, now): (&str, &str, Tell, bool, i64) =
            ($id, $payment_intent, $tell, $mail, $now);
        let mut enqueued = false;
        let naming = refunds::table
            .filter(refunds::payment_intent.eq(payment_intent))
            .filter(refunds::kind.eq(NewsKind::Refund.as_str()))
            .filter(refunds::status.eq(RefundStatus::Succeeded.as_str()))
            .filter(refunds::items.is_not_null())
            .order((refunds::created_at, refunds::id))
            .select((refunds::id, refunds::items))
            .load::<(String, Option<String>)>($conn)
            .await?;
        // What the session bought of each SKU, and whether that stock was taken yet.
        let movements: HashMap<String, (i64, bool)> = if naming.is_empty() {
            HashMap::new()
        } else {
            stock_movements::table
                .filter(stock_movements::session_id.eq(id))
                .select((
                    stock_movements::sku,
                    stock_movements::quantity,
                    stock_movements::applied_at.is_not_null(),
                ))
                .load::<(String, i64, bool)>($conn)
                .await?
                .into_iter()
                .map(|(sku, quantity, taken)| (sku, (quantity, taken)))
                .collect()
        };
        let bought: HashMap<&str, i64> = movements
            .iter()
            .map(|(sku, (quantity, _))| (sku.as_str(), *quantity))
            .collect();
        if !bought.is_empty() {
            let given: Vec<(String, String, i64)> = item_returns::table
                .filter(item_returns::session_id.eq(id))
                .select((
                    item_returns::refund_id,
                    item_returns::sku,
                    item_returns::quantity,
                ))
                .load($conn)
                .await?;
            let mut left = bought.clone();
            for (_, sku, quantity) in &given {
                if let Some(units) = left.get_mut(sku.as_str()) {
                    *units -= quantity;
                }
            }
            // A claim of the shipment's request at this moment either committed first and
            // is seen below, or waits for this transaction and then sends what it left.
            diesel::update(
                effects::table
                    .filter(effects::session_id.eq(id))
                    .filter(effects::kind.eq(EffectKind::Shipment)),
            )
            .set(effects::updated_at.eq(effects::updated_at))
            .execute($conn)
            .await?;
            let tried = $crate::db::refunds::shipment_tried!($conn, id);
            let answered = shipments::table
                .filter(shipments::session_id.eq(id))
                .filter(
                    shipments::status.eq_any([ShipmentStatus::Submitted, ShipmentStatus::Failed]),
                )
                .select(shipments::status)
                .first::<ShipmentStatus>($conn)
                .await
                .optional()?;
            // Goods the warehouse accepted may have left: with no SHIPPING_WEBHOOK_URL to ask
            // it now, their units wait for an operator, as at a full refund.
            let asked = (tell.warehouse && (tried || answered.is_some()))
                || answered == Some(ShipmentStatus::Submitted);
            // Stock put back, by SKU, written after every refund in SKU order, as the stock
            // is taken: concurrent sessions never deadlock.
            let mut restock: std::collections::BTreeMap<String, i64> = Default::default();
            for (refund_id, items) in &naming {
                if given.iter().any(|(given, ..)| given == refund_id) {
                    continue;
                }
                let mut units: Vec<(String, i64)> = Vec::new();
                for (sku, quantity) in refunded_items(items.as_deref().unwrap_or_default()) {
                    if let Some(left) = left.get_mut(sku) {
                        let quantity = quantity.min(*left);
                        if quantity > 0 {
                            *left -= quantity;
                            units.push((sku.to_owned(), quantity));
                        }
                    }
                }
                for (sku, quantity) in &units {
                    // Stock not taken yet is taken less, when it is (see
                    // `apply_stock_movements`), rather than put back now.
                    let taken = movements.get(sku).is_some_and(|(_, taken)| *taken);
                    let back = !asked && taken;
                    let inserted = diesel::insert_into(item_returns::table)
                        .values((
                            item_returns::refund_id.eq(refund_id),
                            item_returns::sku.eq(sku),
                            item_returns::session_id.eq(id),
                            item_returns::quantity.eq(quantity),
                            item_returns::asked.eq(asked),
                            item_returns::returned_at.eq(back.then_some(now)),
                            item_returns::created_at.eq(now),
                        ))
                        .on_conflict_do_nothing()
                        .execute($conn)
                        .await?;
                    if inserted == 1 && back {
                        *restock.entry(sku.clone()).or_default() += quantity;
                    }
                }
                if units.is_empty() {
                    continue;
                }
                if asked && tell.warehouse {
                    enqueued |= $crate::db::refunds::enqueue!(
                        $conn,
                        id,
                        EffectKind::ShipmentCancel,
                        refund_id,
                        None,
                        now
                    );
                }
            }
            $crate::db::refunds::restock!($conn, restock, now);
            // Nothing left to ship, and the warehouse never had it: no shipment at all.
            if !asked && left.values().all(|units| *units <= 0) {
                $crate::db::refunds::cancel_unheld!($conn, id, [EffectKind::Shipment], now);
                $crate::db::refunds::cancel_shipment!($conn, id, now);
            }
        }
        // One email per refund naming items the session bought, digital or physical;
        // enqueued once, however often the refund is applied.
        if mail && !naming.is_empty() {
            let granted = access_grants::table
                .filter(access_grants::session_id.eq(id))
                .select(access_grants::sku)
                .load::<String>($conn)
                .await?;
            for (refund_id, items) in &naming {
                let named = refunded_skus(items.as_deref().unwrap_or_default());
                let bought = |sku: &&str| {
                    movements.contains_key(*sku) || granted.iter().any(|granted| granted == sku)
                };
                if named.iter().any(bought) {
                    enqueued |= $crate::db::refunds::enqueue!(
                        $conn,
                        id,
                        EffectKind::RefundEmail,
                        refund_id,
                        None,
                        now
                    );
                }
            }
        }
        enqueued
    }};
}
pub(crate) use return_items;
