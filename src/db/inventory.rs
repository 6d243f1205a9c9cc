//! Stock: one level per SKU, moved once per (session, SKU).

use std::time::Duration;

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};

use super::effects::{Fence, lock_session_status, mark_done};
use super::refunds::return_stock;
use super::schema::{effects, inventory, item_returns, stock_movements};
use super::{Database, now_ms, with_connection};
use crate::catalog::{Catalog, Kind};
use crate::domain::{EffectStatus, Status};

/// A SKU's stock after a movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: String,
    pub stock: i64,
}

impl Database {
    /// Gives every physical SKU of the catalog its starting stock, unless it already has a
    /// level: restarts and catalog edits never reset stock that has moved.
    pub async fn seed_inventory(&self, catalog: &Catalog) -> anyhow::Result<()> {
        let now = now_ms();
        // One transaction: the catalog is seeded whole or not at all.
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                for product in catalog
                    .products()
                    .iter()
                    .filter(|p| p.kind == Kind::Physical)
                {
                    diesel::insert_into(inventory::table)
                        .values((
                            inventory::sku.eq(&product.sku),
                            inventory::stock.eq(product.stock),
                            inventory::oversold.eq(false),
                            inventory::updated_at.eq(now),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                }
                Ok::<_, diesel::result::Error>(())
            })
            .await
            .context("could not seed the inventory")
        })
    }

    /// Applies a session's stock movements not yet applied and marks the effect `fence`
    /// names done, in one transaction: a crash leaves both undone, never one. Returns the
    /// new levels of the SKUs moved, or `None` (and changes nothing) when the effect is no
    /// longer leased to the attempt. Stock may go negative (the customer has paid); the
    /// SKU is then flagged as oversold. Units a refund kept from the shipment before now
    /// are not taken.
    ///
    /// Each movement is taken by `UPDATE … WHERE applied_at IS NULL RETURNING`, so stock
    /// moves once even if two attempts ever ran this at once. On PostgreSQL the wait for a
    /// row lock another connection holds is bounded by `lock_wait`; past it the attempt
    /// fails, changes nothing, and is retried.
    pub async fn apply_stock_movements(
        &self,
        fence: Fence,
        session_id: &str,
        lock_wait: Duration,
    ) -> anyhow::Result<Option<Vec<StockLevel>>> {
        let now = now_ms();
        let lock_timeout = match self {
            // `SET LOCAL` takes no bind parameters; the value is a number of our own.
            Self::Postgres(_) => Some(format!(
                "SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}",
                ms = lock_wait.as_millis().max(1)
            )),
            Self::Sqlite(_) => None,
        };
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                if let Some(sql) = &lock_timeout {
                    conn.batch_execute(sql).await?;
                }
                // The session's row first, as a refund takes it: a refund applied while
                // this attempt ran is seen below, not missed.
                let status = lock_session_status!(conn, session_id);
                let done = mark_done!(fence, now).execute(conn).await?;
                if done == 0 {
                    return Ok::<_, anyhow::Error>(None);
                }
                let mut pending = diesel::update(
                    stock_movements::table
                        .filter(stock_movements::session_id.eq(session_id))
                        .filter(stock_movements::applied_at.is_null()),
                )
                .set(stock_movements::applied_at.eq(now))
                .returning((stock_movements::sku, stock_movements::quantity))
                .get_results::<(String, i64)>(conn)
                .await?;
                // Units refunds kept from the shipment before the stock moved never leave:
                // they are not taken.
                let kept = diesel::update(
                    item_returns::table
                        .filter(item_returns::session_id.eq(session_id))
                        .filter(item_returns::asked.eq(false))
                        .filter(item_returns::returned_at.is_null()),
                )
                .set(item_returns::returned_at.eq(now))
                .returning((item_returns::sku, item_returns::quantity))
                .get_results::<(String, i64)>(conn)
                .await?;
                for (sku, quantity) in &mut pending {
                    let named = kept.iter().filter(|(kept, _)| kept == sku);
                    *quantity -= named.map(|(_, units)| units).sum::<i64>();
                }
                pending.retain(|(_, quantity)| *quantity > 0);
                // SKU order: concurrent sessions lock stock rows in one order, so replicas
                // never deadlock.
                pending.sort();
                let mut levels = Vec::with_capacity(pending.len());
                for (sku, quantity) in pending {
                    // A SKU sold before it was in the catalog starts from zero.
                    diesel::insert_into(inventory::table)
                        .values((
                            inventory::sku.eq(&sku),
                            inventory::stock.eq(0),
                            inventory::oversold.eq(false),
                            inventory::updated_at.eq(now),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    let stock = diesel::update(inventory::table.find(&sku))
                        .set((
                            inventory::stock.eq(inventory::stock - quantity),
                            inventory::oversold
                                .eq(inventory::oversold.or(inventory::stock.lt(quantity))),
                            inventory::updated_at.eq(now),
                        ))
                        .returning(inventory::stock)
                        .get_result::<i64>(conn)
                        .await?;
                    levels.push(StockLevel { sku, stock });
                }
                // Refunded in full while this attempt ran: the refund put back what had
                // moved by then, and what moved now goes back the same way.
                if status == Some(Status::Refunded) {
                    return_stock!(conn, session_id, now);
                }
                Ok(Some(levels))
            })
            .await
            .context("could not apply the stock movements")
        })
    }

    /// A SKU's stock and whether it has been oversold.
    pub async fn stock(&self, sku: &str) -> anyhow::Result<Option<(i64, bool)>> {
        with_connection!(self, |conn| {
            inventory::table
                .find(sku)
                .select((inventory::stock, inventory::oversold))
                .first::<(i64, bool)>(conn)
                .await
                .optional()
                .context("could not read the stock")
        })
    }

    /// A session's stock movements as (sku, quantity, applied).
    pub async fn stock_movements_of(
        &self,
        session_id: &str,
    ) -> anyhow::Result<Vec<(String, i64, bool)>> {
        with_connection!(self, |conn| {
            stock_movements::table
                .filter(stock_movements::session_id.eq(session_id))
                .order(stock_movements::sku)
                .select((
                    stock_movements::sku,
                    stock_movements::quantity,
                    stock_movements::applied_at.is_not_null(),
                ))
                .load::<(String, i64, bool)>(conn)
                .await
                .context("could not read the stock movements")
        })
    }
}
