//! Refunds and disputes: each piece of news stored once, by the payment intent it names,
//! and applied to the session that payment intent paid for.
//!
//! Storing and applying are apart. News is stored whether or not its session is recorded
//! yet, and applying reads all the news stored for the session's payment intent, so it
//! comes to the same result however often, in whatever order and on however many replicas
//! it runs.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{checkout_sessions, foreign_payment_intents, refunds};

mod apply;
mod items;
mod returns;
mod steps;
use super::{Database, now_ms, with_connection};
use crate::domain::{NewsKind, Progress, ReversalNews, SessionId, Status, Tell};
pub(crate) use apply::apply_reversals;
pub(crate) use items::return_items;
pub(crate) use steps::{
    cancel_shipment, cancel_unheld, enqueue, restock, return_stock, shipment_tried,
};

/// How long Stripe's answer that no Checkout Session made a payment is kept.
const FOREIGN_KEPT_MS: i64 = 86_400_000;

/// What applying a session's refunds and disputes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub before: Status,
    pub after: Status,
    /// Minor units, all refunds together.
    pub refunded: i64,
    /// Whether effects were enqueued or given back to the outbox (the refund email, a
    /// notice, a shipment released or asked back).
    pub enqueued: bool,
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
fn supersedes(news: &ReversalNews, amount: i64, status: &str, event_created: i64) -> bool {
    match news.kind {
        // Newer news of the charge stands, whichever way its amount moved (a refund that
        // failed takes it down); within one second, the larger.
        NewsKind::Charge => {
            news.event_created > event_created
                || (news.event_created == event_created && news.amount > amount)
        }
        NewsKind::Refund | NewsKind::Dispute => {
            let stored = Progress::parse(news.kind, status).map_or(0, Progress::rank);
            let rank = news.status.rank();
            rank > stored || (rank == stored && news.event_created >= event_created)
        }
    }
}

impl Database {
    /// Stores refund news, or updates what is stored when the news is newer; true when it
    /// changed what was stored. Concurrent stores of the same refund each compare what
    /// they read before they write, so the newest news wins whatever the order.
    pub async fn store_refund(&self, news: &ReversalNews) -> anyhow::Result<bool> {
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

    /// Applies every refund and dispute stored for `payment_intent` to session `id`,
    /// which it paid for, in one transaction (see [`apply_reversals!`]). `None` when the
    /// session is not recorded or was never fulfilled: nothing is reversed.
    pub async fn apply_reversals(
        &self,
        id: &SessionId,
        payment_intent: &str,
        tell: Tell,
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
                apply_reversals!(conn, id, payment_intent, tell, now)
            })
            .await
            .context("could not apply the session's refunds and disputes")
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

    /// Whether Stripe was found, within the last day, to list no Checkout Session for
    /// `payment_intent`. A day, not for ever: an answer that was wrong for a moment must
    /// not hide a session for good.
    pub async fn is_foreign_payment_intent(&self, payment_intent: &str) -> anyhow::Result<bool> {
        let fresh_since = now_ms() - FOREIGN_KEPT_MS;
        with_connection!(self, |conn| {
            foreign_payment_intents::table
                .find(payment_intent)
                .filter(foreign_payment_intents::checked_at.gt(fresh_since))
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
                .on_conflict(foreign_payment_intents::payment_intent)
                .do_update()
                .set(foreign_payment_intents::checked_at.eq(now_ms()))
                .execute(conn)
                .await
                .context("could not remember the payment intent")
        })?;
        Ok(())
    }
}
