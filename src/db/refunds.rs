//! Refunds: each piece of news stored once, by the payment intent it names, and applied
//! to the session that payment intent paid for.
//!
//! Storing and applying are apart. News is stored whether or not its session is recorded
//! yet, and applying reads all the news stored for the session's payment intent, so it
//! comes to the same result however often, in whatever order and on however many replicas
//! it runs.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{checkout_sessions, foreign_payment_intents, refunds};
use super::{Database, now_ms, with_connection};
use crate::domain::{RefundKind, RefundNews, RefundStatus, SessionId, Status};

/// What applying a session's refunds did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub before: Status,
    pub after: Status,
    /// Minor units, all refunds together.
    pub refunded: i64,
    /// Whether the refund email was enqueued (once per session, at its full refund).
    pub email: bool,
}

#[derive(Insertable)]
#[diesel(table_name = refunds, treat_none_as_default_value = false)]
struct RefundRow<'a> {
    id: &'a str,
    payment_intent: &'a str,
    kind: &'a str,
    amount: i64,
    status: &'a str,
    items: Option<&'a str>,
    event_created: i64,
    created_at: i64,
    updated_at: i64,
}

/// Whether `news` is newer than what is stored: a refund moves forward only, and news of
/// the same standing counts if its event is not older.
fn supersedes(news: &RefundNews, amount: i64, status: &str, event_created: i64) -> bool {
    match news.kind {
        // Newer news of the charge stands, whichever way its amount moved (a refund that
        // failed takes it down); within one second, the larger.
        RefundKind::Charge => {
            news.event_created > event_created
                || (news.event_created == event_created && news.amount > amount)
        }
        RefundKind::Refund => {
            let stored = RefundStatus::parse(status).map_or(0, RefundStatus::rank);
            let rank = news.status.rank();
            rank > stored || (rank == stored && news.event_created >= event_created)
        }
    }
}

impl Database {
    /// Stores refund news, or updates what is stored when the news is newer; true when it
    /// changed what was stored. Concurrent stores of the same refund each compare what
    /// they read before they write, so the newest news wins whatever the order.
    pub async fn store_refund(&self, news: &RefundNews) -> anyhow::Result<bool> {
        let now = now_ms();
        let row = RefundRow {
            id: &news.id,
            payment_intent: &news.payment_intent,
            kind: news.kind.as_str(),
            amount: news.amount,
            status: news.status.as_str(),
            items: news.items.as_deref(),
            event_created: news.event_created,
            created_at: now,
            updated_at: now,
        };
        for _ in 0..8 {
            let settled = with_connection!(self, |conn| {
                let write = async {
                    let inserted = diesel::insert_into(refunds::table)
                        .values(&row)
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if inserted == 1 {
                        return Ok(Some(true));
                    }
                    let (amount, status, event_created) = refunds::table
                        .find(row.id)
                        .select((refunds::amount, refunds::status, refunds::event_created))
                        .first::<(i64, String, i64)>(conn)
                        .await?;
                    if !supersedes(news, amount, &status, event_created) {
                        return Ok(Some(false));
                    }
                    let updated = diesel::update(
                        refunds::table
                            .find(row.id)
                            .filter(refunds::amount.eq(amount))
                            .filter(refunds::status.eq(&status))
                            .filter(refunds::event_created.eq(event_created)),
                    )
                    .set((
                        refunds::amount.eq(row.amount),
                        refunds::status.eq(row.status),
                        refunds::items.eq(row.items),
                        refunds::event_created.eq(row.event_created),
                        refunds::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                    // Changed meanwhile by another store: read it again.
                    Ok::<_, diesel::result::Error>((updated == 1).then_some(true))
                };
                write.await.context("could not store the refund")
            })?;
            if let Some(changed) = settled {
                return Ok(changed);
            }
        }
        anyhow::bail!("the refund kept changing while it was stored")
    }

    /// The session the payment intent paid for, if it is recorded with it.
    pub async fn session_of_payment_intent(
        &self,
        payment_intent: &str,
    ) -> anyhow::Result<Option<SessionId>> {
        let id = with_connection!(self, |conn| {
            checkout_sessions::table
                .filter(checkout_sessions::payment_intent.eq(payment_intent))
                .select(checkout_sessions::id)
                .first::<String>(conn)
                .await
                .optional()
                .context("could not look the payment intent up")
        })?;
        id.map(|id| SessionId::parse(&id).map_err(anyhow::Error::msg))
            .transpose()
    }

    /// Applies every refund stored for `payment_intent` to session `id`, which it paid
    /// for, in one transaction (see [`apply_refunds!`]). `None` when the session is not
    /// recorded or was never fulfilled: nothing is reversed.
    pub async fn apply_refunds(
        &self,
        id: &SessionId,
        payment_intent: &str,
        email: bool,
    ) -> anyhow::Result<Option<Applied>> {
        let id = id.as_str();
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                // Recorded before payment intents were: it is learnt now. The update also
                // takes the session's row lock on PostgreSQL, so a fulfilment recording it
                // at this moment commits first.
                diesel::update(checkout_sessions::table.find(id))
                    .set(checkout_sessions::payment_intent.eq(payment_intent))
                    .filter(checkout_sessions::payment_intent.is_null())
                    .execute(conn)
                    .await?;
                diesel::update(checkout_sessions::table.find(id))
                    .set(checkout_sessions::updated_at.eq(checkout_sessions::updated_at))
                    .execute(conn)
                    .await?;
                apply_refunds!(conn, id, payment_intent, email, now)
            })
            .await
            .context("could not apply the session's refunds")
        })
    }

    /// The payment intent session `id` was recorded with, if any.
    pub async fn payment_intent_of(&self, id: &SessionId) -> anyhow::Result<Option<String>> {
        with_connection!(self, |conn| {
            checkout_sessions::table
                .find(id.as_str())
                .select(checkout_sessions::payment_intent)
                .first::<Option<String>>(conn)
                .await
                .optional()
                .map(Option::flatten)
                .context("could not read the session's payment intent")
        })
    }

    /// Whether Stripe was found to list no Checkout Session for `payment_intent`.
    pub async fn is_foreign_payment_intent(&self, payment_intent: &str) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            foreign_payment_intents::table
                .find(payment_intent)
                .count()
                .get_result::<i64>(conn)
                .await
                .map(|found| found > 0)
                .context("could not look the payment intent up")
        })
    }

    /// Remembers that Stripe lists no Checkout Session for `payment_intent`, so later
    /// news about it costs no call.
    pub async fn remember_foreign_payment_intent(
        &self,
        payment_intent: &str,
    ) -> anyhow::Result<()> {
        with_connection!(self, |conn| {
            diesel::insert_into(foreign_payment_intents::table)
                .values((
                    foreign_payment_intents::payment_intent.eq(payment_intent),
                    foreign_payment_intents::checked_at.eq(now_ms()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .context("could not remember the payment intent")
        })?;
        Ok(())
    }
}

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
