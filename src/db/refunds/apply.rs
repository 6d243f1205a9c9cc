//! Applying a session's refunds inside a transaction, on either backend.

/// Applies every refund stored for `$payment_intent` to session `$id` on `$conn`, inside
/// the caller's transaction, which must already hold the session's row (on PostgreSQL,
/// by having written it): the session's refunded amount and status; at a full refund,
/// every grant revoked, what was not carried out yet of the fulfilment (receipt, stock,
/// shipment) cancelled, stock taken for goods that never left put back, and (with
/// `$email`) the refund email enqueued, once; before it,
/// the grants of the items refunds name revoked. Evaluates to
/// `Result<Option<Applied>, diesel::result::Error>`: `None` when the session is not
/// recorded with that payment intent or was never fulfilled. A macro, so that one text
/// serves both backends and any open transaction.
macro_rules! apply_refunds {
    ($conn:ident, $id:expr, $payment_intent:expr, $email:expr, $now:expr) => {{
        use std::collections::HashSet;
        use $crate::db::refunds::Applied;
        use $crate::db::schema::{
            access_grants, checkout_sessions, effects, inventory, refunds, shipments,
            stock_movements,
        };
        use $crate::db::types::DbNow;
        use $crate::domain::{
            EffectKind, EffectStatus, RefundKind, RefundStatus, ShipmentStatus, Status,
            refunded_skus, status_after_refunds,
        };
        let (id, payment_intent, now): (&str, &str, i64) = ($id, $payment_intent, $now);
        let session = checkout_sessions::table
            .find(id)
            .filter(checkout_sessions::payment_intent.eq(payment_intent))
            .select((
                checkout_sessions::status,
                checkout_sessions::amount_total,
                checkout_sessions::customer_email,
            ))
            .first::<(Status, Option<i64>, Option<String>)>($conn)
            .await
            .optional()?;
        match session {
            Some((before, total, customer_email)) if before.was_fulfilled() => {
                let news = refunds::table
                    .filter(refunds::payment_intent.eq(payment_intent))
                    .select((
                        refunds::kind,
                        refunds::amount,
                        refunds::status,
                        refunds::items,
                    ))
                    .load::<(String, i64, String, Option<String>)>($conn)
                    .await?;
                let counted = news.iter().filter(|(kind, _, status, _)| {
                    kind == RefundKind::Refund.as_str()
                        && RefundStatus::parse(status).is_some_and(RefundStatus::counts)
                });
                let refunds_total: i64 = counted.clone().map(|(_, amount, ..)| amount).sum();
                let charge_total = news
                    .iter()
                    .filter(|(kind, ..)| kind == RefundKind::Charge.as_str())
                    .map(|(_, amount, ..)| *amount)
                    .max()
                    .unwrap_or(0);
                // A charge's refunded amount counts refunds still pending too: it stands
                // only where no refund news came (API versions before refund events).
                let told_of_refunds = news
                    .iter()
                    .any(|(kind, ..)| kind == RefundKind::Refund.as_str());
                let refunded = if told_of_refunds {
                    refunds_total
                } else {
                    charge_total
                };
                let after = status_after_refunds(before, total, refunded);
                diesel::update(checkout_sessions::table.find(id))
                    .set((
                        checkout_sessions::status.eq(after),
                        checkout_sessions::amount_refunded.eq(refunded),
                        checkout_sessions::updated_at.eq(now),
                    ))
                    .execute($conn)
                    .await?;
                let grants = access_grants::table
                    .filter(access_grants::session_id.eq(id))
                    .filter(access_grants::revoked_at.is_null());
                let mut email = false;
                if after == Status::Refunded {
                    diesel::update(grants)
                        .set(access_grants::revoked_at.eq(now))
                        .execute($conn)
                        .await?;
                    // What no attempt holds now is never carried out; one under way
                    // finishes.
                    diesel::update(
                        effects::table
                            .filter(effects::session_id.eq(id))
                            .filter(effects::kind.eq_any([
                                EffectKind::Receipt,
                                EffectKind::Inventory,
                                EffectKind::Shipment,
                            ]))
                            .filter(effects::status.eq(EffectStatus::Pending))
                            .filter(
                                effects::lease_until
                                    .is_null()
                                    .or(effects::lease_until.le(DbNow::now().nullable())),
                            )
                            // A shipment tried before may have reached the warehouse.
                            .filter(
                                effects::kind
                                    .ne(EffectKind::Shipment)
                                    .or(effects::attempts.eq(0)),
                            ),
                    )
                    .set((
                        effects::status.eq(EffectStatus::Cancelled),
                        effects::lease_until.eq(None::<i64>),
                        effects::updated_at.eq(now),
                    ))
                    .execute($conn)
                    .await?;
                    let shipping = effects::table
                        .filter(effects::session_id.eq(id))
                        .filter(effects::kind.eq(EffectKind::Shipment))
                        .filter(effects::status.eq(EffectStatus::Pending));
                    diesel::update(
                        shipments::table
                            .filter(shipments::session_id.eq(id))
                            .filter(shipments::status.eq_any([
                                ShipmentStatus::Pending,
                                ShipmentStatus::AwaitingManualHandling,
                            ]))
                            .filter(diesel::dsl::not(diesel::dsl::exists(shipping))),
                    )
                    .set((
                        shipments::status.eq(ShipmentStatus::Cancelled),
                        shipments::updated_at.eq(now),
                    ))
                    .execute($conn)
                    .await?;
                    // Stock taken for goods that never left goes back, once: not for a
                    // shipment the warehouse accepted.
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
                    // SKU order, as the stock is taken: concurrent sessions never deadlock.
                    back.sort();
                    for (sku, quantity) in back {
                        diesel::update(inventory::table.find(sku))
                            .set((
                                inventory::stock.eq(inventory::stock + quantity),
                                inventory::updated_at.eq(now),
                            ))
                            .execute($conn)
                            .await?;
                    }
                    if $email && customer_email.is_some() {
                        email = diesel::insert_into(effects::table)
                            .values((
                                effects::session_id.eq(id),
                                effects::kind.eq(EffectKind::RefundEmail),
                                effects::status.eq(EffectStatus::Pending),
                                effects::attempts.eq(0),
                                effects::next_attempt_at.eq(DbNow::now()),
                                effects::created_at.eq(now),
                                effects::updated_at.eq(now),
                            ))
                            .on_conflict_do_nothing()
                            .execute($conn)
                            .await?
                            == 1;
                    }
                } else {
                    let skus: HashSet<&str> = counted
                        .filter_map(|(_, _, _, items)| items.as_deref())
                        .flat_map(refunded_skus)
                        .collect();
                    if !skus.is_empty() {
                        diesel::update(grants.filter(access_grants::sku.eq_any(skus)))
                            .set(access_grants::revoked_at.eq(now))
                            .execute($conn)
                            .await?;
                    }
                }
                Ok::<_, diesel::result::Error>(Some(Applied {
                    before,
                    after,
                    refunded,
                    email,
                }))
            }
            _ => Ok(None),
        }
    }};
}
pub(crate) use apply_refunds;
