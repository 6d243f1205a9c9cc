//! Units of physical goods that refunds gave back by item: what a shipment leaves out,
//! what a refund asks the warehouse to cancel, and the stock its yes puts back.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::db::effects::{Fence, lock_session_status, mark_done};
use crate::db::schema::{effects, item_returns, refunds, stock_movements};
use crate::db::{Database, now_ms, with_connection};
use crate::domain::{EffectStatus, Outcome};

impl Database {
    /// Takes off `outcome`'s shipment the units refunds gave back by item: those kept from
    /// it and those back in stock. Its items are then what is left to ship, as a shipment
    /// request sends them and as an operator or the customer is shown them.
    pub async fn leave_off_shipment(&self, outcome: &mut Outcome) -> anyhow::Result<()> {
        let Some(shipment) = outcome.shipment.as_mut() else {
            return Ok(());
        };
        let session_id = outcome.session_id.as_str();
        let rows = with_connection!(self, |conn| {
            item_returns::table
                .filter(item_returns::session_id.eq(session_id))
                .filter(
                    item_returns::asked
                        .eq(false)
                        .or(item_returns::returned_at.is_not_null()),
                )
                .select((item_returns::sku, item_returns::quantity))
                .load::<(String, i64)>(conn)
                .await
                .context("could not read the units refunded by item")
        })?;
        shipment.leave_out(&rows);
        Ok(())
    }

    /// The units of each SKU that refund `refund_id` gave back of session `session_id`,
    /// whichever way.
    pub async fn returned_by_refund(
        &self,
        session_id: &str,
        refund_id: &str,
    ) -> anyhow::Result<Vec<(String, i64)>> {
        let kept = self
            .item_returns(session_id, Some(refund_id), false)
            .await?;
        let asked = self.item_returns(session_id, Some(refund_id), true).await?;
        let mut units = [kept, asked].concat();
        units.sort();
        Ok(units)
    }

    async fn item_returns(
        &self,
        session_id: &str,
        refund_id: Option<&str>,
        asked: bool,
    ) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = with_connection!(self, |conn| {
            let mut query = item_returns::table
                .filter(item_returns::session_id.eq(session_id))
                .filter(item_returns::asked.eq(asked))
                .select((item_returns::sku, item_returns::quantity))
                .into_boxed();
            if let Some(refund_id) = refund_id {
                query = query.filter(item_returns::refund_id.eq(refund_id));
            }
            query
                .load::<(String, i64)>(conn)
                .await
                .context("could not read the units refunded by item")
        })?;
        let mut units: Vec<(String, i64)> = Vec::new();
        for (sku, quantity) in rows {
            match units.iter_mut().find(|(named, _)| *named == sku) {
                Some((_, sum)) => *sum += quantity,
                None => units.push((sku, quantity)),
            }
        }
        Ok(units)
    }

    /// The amount of refund `refund_id`, in minor units, and the items it names
    /// (`metadata.items`), if it is stored.
    pub async fn refund_amount_and_items(
        &self,
        refund_id: &str,
    ) -> anyhow::Result<Option<(i64, Option<String>)>> {
        with_connection!(self, |conn| {
            refunds::table
                .find(refund_id)
                .select((refunds::amount, refunds::items))
                .first::<(i64, Option<String>)>(conn)
                .await
                .optional()
                .context("could not read the refund")
        })
    }

    /// Records that the warehouse cancelled the units refund `refund_id` asked it to cancel
    /// of session `session_id`'s shipment (or never had the shipment), with the attempt's
    /// effect done, in one transaction: those units go back into stock, once, where the
    /// session's stock of their SKU was taken. Where it was not taken yet they are kept
    /// from it instead, so it is taken less when it is taken (and never, if a full refund
    /// cancels the taking). False when the lease is no longer the attempt's.
    pub async fn complete_items_cancel(
        &self,
        fence: Fence,
        session_id: &str,
        refund_id: &str,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                // The session's row first, as the stock's taking locks it: whether the
                // stock was taken cannot change before this commits.
                lock_session_status!(conn, session_id);
                if mark_done!(fence, now).execute(conn).await? != 1 {
                    return Ok(false);
                }
                let waiting = item_returns::table
                    .filter(item_returns::refund_id.eq(refund_id))
                    .filter(item_returns::session_id.eq(session_id))
                    .filter(item_returns::returned_at.is_null());
                let taken = stock_movements::table
                    .filter(stock_movements::session_id.eq(session_id))
                    .filter(stock_movements::applied_at.is_not_null())
                    .select(stock_movements::sku);
                // Units whose stock was never taken are kept: taken less, if it ever is.
                diesel::update(waiting.filter(diesel::dsl::not(item_returns::sku.eq_any(taken))))
                    .set(item_returns::asked.eq(false))
                    .execute(conn)
                    .await?;
                let mut back = diesel::update(
                    waiting
                        .filter(item_returns::asked.eq(true))
                        .filter(item_returns::sku.eq_any(taken)),
                )
                .set(item_returns::returned_at.eq(now))
                .returning((item_returns::sku, item_returns::quantity))
                .get_results::<(String, i64)>(conn)
                .await?;
                // SKU order, as the stock is taken: concurrent sessions never deadlock.
                back.sort();
                crate::db::refunds::restock!(conn, back, now);
                Ok::<_, diesel::result::Error>(true)
            })
            .await
            .context("could not record the cancellation of the refunded units")
        })
    }
}
