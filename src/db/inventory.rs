//! Stock: one level per SKU, moved once per (session, SKU).

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{effects, inventory, stock_movements};
use super::{Database, now_ms, with_connection};
use crate::catalog::{Catalog, Kind};

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
        with_connection!(self, |conn| {
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
                    .await
                    .context("could not seed the inventory")?;
            }
        });
        Ok(())
    }

    /// Applies a session's stock movements not yet applied and marks effect `effect_id`
    /// done, in one transaction: a crash leaves both undone, never one. Returns the new
    /// levels of the SKUs moved. Stock may go negative (the customer has paid); the SKU
    /// is then flagged as oversold.
    pub async fn apply_stock_movements(
        &self,
        effect_id: i64,
        session_id: &str,
    ) -> anyhow::Result<Vec<StockLevel>> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let pending = stock_movements::table
                    .filter(stock_movements::session_id.eq(session_id))
                    .filter(stock_movements::applied_at.is_null())
                    // SKU order: concurrent sessions lock stock rows in one order, so
                    // replicas never deadlock.
                    .order(stock_movements::sku)
                    .select((stock_movements::sku, stock_movements::quantity))
                    .load::<(String, i64)>(conn)
                    .await?;
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
                            inventory::updated_at.eq(now),
                        ))
                        .returning(inventory::stock)
                        .get_result::<i64>(conn)
                        .await?;
                    if stock < 0 {
                        diesel::update(inventory::table.find(&sku))
                            .set(inventory::oversold.eq(true))
                            .execute(conn)
                            .await?;
                    }
                    diesel::update(stock_movements::table.find((session_id, &sku)))
                        .set(stock_movements::applied_at.eq(now))
                        .execute(conn)
                        .await?;
                    levels.push(StockLevel { sku, stock });
                }
                diesel::update(effects::table.find(effect_id))
                    .set((
                        effects::status.eq("done"),
                        effects::lease_until.eq(None::<i64>),
                        effects::last_error.eq(None::<String>),
                        effects::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                Ok::<_, anyhow::Error>(levels)
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
