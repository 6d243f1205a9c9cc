//! Applying a session's refunds and disputes inside a transaction, on either backend.

/// Applies every refund and dispute stored for `$payment_intent` to session `$id` on
/// `$conn`, inside the caller's transaction, which must already hold the session's row
/// (on PostgreSQL, by having written it). `$tell` ([`Tell`](crate::domain::Tell)) says
/// who is told of what changed.
///
/// - The session's refunded amount and status (see [`status_after`]).
/// - At a full refund (or a lost dispute): every grant revoked; what was not carried out
///   yet of the fulfilment (receipt, stock, the shipment) cancelled; stock taken for goods
///   that never left put back; the warehouse asked to cancel a shipment it may have
///   accepted, from an attempt made or under way; the refund email enqueued, once.
/// - Before it: the grants of the items refunds name revoked, and the physical units they
///   name given back (see [`return_items!`]); while a dispute is open,
///   the other grants suspended and a shipment not sent yet held; once none is open, both
///   given back.
///
/// Every step changes only what is not changed yet, so applying again changes nothing.
/// Evaluates to `Result<Option<Applied>, diesel::result::Error>`: `None` when the session
/// is not recorded with that payment intent or was never fulfilled. A macro, so that one
/// text serves both backends and any open transaction.
///
/// [`status_after`]: crate::domain::status_after
/// [`return_items!`]: crate::db::refunds::return_items
macro_rules! apply_reversals {
    ($conn:ident, $id:expr, $payment_intent:expr, $tell:expr, $now:expr) => {{
        use std::collections::HashSet;
        use $crate::db::refunds::Applied;
        use $crate::db::schema::{access_grants, checkout_sessions, effects, refunds, shipments};
        use $crate::db::types::DbNow;
        use $crate::domain::{
            AccessChange, DisputeStatus, EffectKind, EffectStatus, NewsKind, RefundStatus,
            ShipmentStatus, Status, Tell, refunded_skus, status_after,
        };
        let (id, payment_intent, tell, now): (&str, &str, Tell, i64) =
            ($id, $payment_intent, $tell, $now);
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
                let of_kind = |kind: NewsKind| {
                    news.iter()
                        .filter(move |(stored, ..)| stored.as_str() == kind.as_str())
                };
                let counted = of_kind(NewsKind::Refund).filter(|(_, _, status, _)| {
                    RefundStatus::parse(status).is_some_and(RefundStatus::counts)
                });
                let refunds_total: i64 = counted.clone().map(|(_, amount, ..)| amount).sum();
                let charge_total = of_kind(NewsKind::Charge)
                    .map(|(_, amount, ..)| *amount)
                    .max()
                    .unwrap_or(0);
                // Charge news comes only from API versions before refund events, where a
                // refund may have no news of its own: the charge's refunded amount is a
                // floor under the refunds told, never added to them.
                let refunded = refunds_total.max(charge_total);
                let disputes = of_kind(NewsKind::Dispute)
                    .filter_map(|(_, _, status, _)| DisputeStatus::parse(status));
                // A refund fails only after it looked made: it counted once.
                let ever_refunded = refunded > 0
                    || charge_total > 0
                    || of_kind(NewsKind::Refund).any(|(_, amount, status, _)| {
                        *amount > 0 && RefundStatus::parse(status) == Some(RefundStatus::Failed)
                    });
                let after = status_after(before, total, refunded, ever_refunded, disputes);
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
                // What the transaction changed of the grants, for ACCESS_WEBHOOK_URL.
                let mut changes: Vec<(AccessChange, Vec<String>)> = Vec::new();
                let mut enqueued = false;
                if after == Status::Refunded {
                    let revoked = diesel::update(grants)
                        .set(access_grants::revoked_at.eq(now))
                        .returning(access_grants::sku)
                        .get_results::<String>($conn)
                        .await?;
                    changes.push((AccessChange::Revoked, revoked));
                    // A shipment tried before may have reached the warehouse: it is never
                    // sent again, but it is asked back. An attempt that failed leaves its
                    // error, which an operator's revival (a fresh count) keeps.
                    let tried = $crate::db::refunds::shipment_tried!($conn, id);
                    // Once the warehouse is asked back, the shipment and its stock are its
                    // answer's: news applied again (a `refund.updated` after the
                    // `refund.created`) leaves them alone.
                    let cancel_asked = effects::table
                        .filter(effects::session_id.eq(id))
                        .filter(effects::kind.eq(EffectKind::ShipmentCancel))
                        .filter(effects::subject.eq(""))
                        .count()
                        .get_result::<i64>($conn)
                        .await?
                        > 0;
                    // What no attempt holds now is never carried out; one under way
                    // finishes.
                    $crate::db::refunds::cancel_unheld!(
                        $conn,
                        id,
                        [
                            EffectKind::Receipt,
                            EffectKind::Inventory,
                            EffectKind::Shipment
                        ],
                        now
                    );
                    if !(tried && tell.warehouse) && !cancel_asked {
                        $crate::db::refunds::cancel_shipment!($conn, id, now);
                    }
                    // A shipment the warehouse accepted, or may yet accept from an attempt
                    // already made, is asked back: once, after that attempt ends.
                    let mut asked = cancel_asked;
                    if tell.warehouse && !asked {
                        asked = shipments::table
                            .filter(shipments::session_id.eq(id))
                            .filter(shipments::status.eq_any([
                                ShipmentStatus::Pending,
                                ShipmentStatus::Submitted,
                                ShipmentStatus::Held,
                                ShipmentStatus::Failed,
                            ]))
                            .count()
                            .get_result::<i64>($conn)
                            .await?
                            > 0;
                        if asked {
                            enqueued |= $crate::db::refunds::enqueue!(
                                $conn,
                                id,
                                EffectKind::ShipmentCancel,
                                "",
                                None,
                                now
                            );
                        }
                    }
                    // Stock taken for goods that never left goes back, once: not for a
                    // shipment the warehouse accepted or may have, whose cancellation puts
                    // it back when the warehouse agrees.
                    if !asked {
                        $crate::db::refunds::return_stock!($conn, id, now);
                    }
                    if tell.customer && customer_email.is_some() {
                        enqueued |= $crate::db::refunds::enqueue!(
                            $conn,
                            id,
                            EffectKind::RefundEmail,
                            "",
                            None,
                            now
                        );
                    }
                } else {
                    let skus: HashSet<&str> = counted
                        .filter_map(|(_, _, _, items)| items.as_deref())
                        .flat_map(refunded_skus)
                        .collect();
                    if !skus.is_empty() {
                        let revoked =
                            diesel::update(grants.filter(access_grants::sku.eq_any(skus)))
                                .set(access_grants::revoked_at.eq(now))
                                .returning(access_grants::sku)
                                .get_results::<String>($conn)
                                .await?;
                        changes.push((AccessChange::Revoked, revoked));
                    }
                    enqueued |= $crate::db::refunds::return_items!(
                        $conn,
                        id,
                        payment_intent,
                        tell,
                        tell.customer && customer_email.is_some(),
                        now
                    );
                    let holding = after == Status::Disputed;
                    let (effect_from, effect_to) = if holding {
                        (EffectStatus::Pending, EffectStatus::Held)
                    } else {
                        (EffectStatus::Held, EffectStatus::Pending)
                    };
                    let changed = if holding {
                        let suspended =
                            diesel::update(grants.filter(access_grants::suspended_at.is_null()))
                                .set(access_grants::suspended_at.eq(now))
                                .returning(access_grants::sku)
                                .get_results::<String>($conn)
                                .await?;
                        (AccessChange::Suspended, suspended)
                    } else {
                        let restored = diesel::update(
                            grants.filter(access_grants::suspended_at.is_not_null()),
                        )
                        .set(access_grants::suspended_at.eq(None::<i64>))
                        .returning(access_grants::sku)
                        .get_results::<String>($conn)
                        .await?;
                        (AccessChange::Restored, restored)
                    };
                    changes.push(changed);
                    // A shipment no attempt holds waits for the dispute; one under way
                    // finishes.
                    let moved = diesel::update(
                        effects::table
                            .filter(effects::session_id.eq(id))
                            .filter(effects::kind.eq(EffectKind::Shipment))
                            .filter(effects::status.eq(effect_from))
                            .filter(
                                effects::lease_until
                                    .is_null()
                                    .or(effects::lease_until.le(DbNow::now().nullable())),
                            ),
                    )
                    .set((
                        effects::status.eq(effect_to),
                        effects::lease_until.eq(None::<i64>),
                        effects::next_attempt_at.eq(DbNow::now()),
                        effects::updated_at.eq(now),
                    ))
                    .execute($conn)
                    .await?;
                    enqueued |= !holding && moved > 0;
                    // A shipment waiting for the warehouse or for an operator is held, so
                    // neither ships it; given back, it waits for whichever it waited for.
                    let requested = effects::table
                        .filter(effects::session_id.eq(id))
                        .filter(effects::kind.eq(EffectKind::Shipment))
                        .filter(
                            effects::status.eq_any([EffectStatus::Pending, EffectStatus::Held]),
                        );
                    let shipment = shipments::table.filter(shipments::session_id.eq(id));
                    let held = shipments::status.eq(ShipmentStatus::Held);
                    if holding {
                        diesel::update(shipment.filter(shipments::status.eq_any([
                            ShipmentStatus::Pending,
                            ShipmentStatus::AwaitingManualHandling,
                        ])))
                        .set((held, shipments::updated_at.eq(now)))
                        .execute($conn)
                        .await?;
                    } else {
                        let waiting = shipment.filter(held);
                        diesel::update(waiting.filter(diesel::dsl::exists(requested.clone())))
                            .set((
                                shipments::status.eq(ShipmentStatus::Pending),
                                shipments::updated_at.eq(now),
                            ))
                            .execute($conn)
                            .await?;
                        diesel::update(
                            waiting.filter(diesel::dsl::not(diesel::dsl::exists(requested))),
                        )
                        .set((
                            shipments::status.eq(ShipmentStatus::AwaitingManualHandling),
                            shipments::updated_at.eq(now),
                        ))
                        .execute($conn)
                        .await?;
                    }
                }
                if tell.access {
                    for (change, skus) in changes.into_iter().filter(|(_, skus)| !skus.is_empty()) {
                        let (subject, body) = change
                            .notice(id, &skus, customer_email.as_deref(), now)
                            .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
                        enqueued |= $crate::db::refunds::enqueue!(
                            $conn,
                            id,
                            EffectKind::AccessNotice,
                            &subject,
                            Some(body.as_str()),
                            now
                        );
                    }
                }
                Ok::<_, diesel::result::Error>(Some(Applied {
                    before,
                    after,
                    refunded,
                    enqueued,
                }))
            }
            _ => Ok(None),
        }
    }};
}
pub(crate) use apply_reversals;
