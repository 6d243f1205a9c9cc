//! What the operators' page reads that no other part of the engine needs: sessions by
//! search, a session's refunds and disputes, and every SKU's stock.

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use diesel_async::RunQueryDsl;

use super::schema::{checkout_sessions, inventory, refunds};
use super::{Database, with_connection};
use crate::domain::Status;

diesel::define_sql_function! {
    /// SQL's `lower`, which both backends have.
    fn lower(text: Nullable<Text>) -> Nullable<Text>;
}

/// A session as a row of the operators' list.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = checkout_sessions)]
pub struct SessionRow {
    pub id: String,
    pub status: Status,
    pub currency: Option<String>,
    pub amount_total: Option<i64>,
    /// Shown to operators only; never logged.
    pub customer_email: Option<String>,
    pub fulfilled_at: Option<i64>,
    pub created_at: i64,
    /// The connected account (Stripe Connect), for a platform's sessions.
    pub account: Option<String>,
}

/// A SKU's stock level.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = inventory)]
pub struct StockRow {
    pub sku: String,
    pub stock: i64,
    /// Set once the SKU was sold below zero; it stays set so nobody misses it.
    pub oversold: bool,
    pub updated_at: i64,
}

/// A refund or dispute stored for a session's payment intent.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refunds)]
pub struct ReversalRow {
    /// `re_…`, `ch_…` (a charge's refunds, from `charge.refunded`) or `du_…`.
    pub id: String,
    /// `refund`, `charge` or `dispute`.
    pub kind: String,
    /// Minor units.
    pub amount: i64,
    pub status: String,
    /// The items a refund names, `SKU:QTY,…`.
    pub items: Option<String>,
    pub updated_at: i64,
}

/// `raw` as a `LIKE` pattern that matches it literally: Stripe's ids are full of `_`,
/// which `LIKE` takes for any character.
fn literal(raw: &str) -> String {
    raw.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Database {
    /// Up to `limit` sessions, newest first; with `search`, only those whose id starts with
    /// it or whose customer email contains it, whatever the case.
    pub async fn recent_sessions(
        &self,
        search: Option<&str>,
        limit: i64,
    ) -> anyhow::Result<Vec<SessionRow>> {
        let patterns = search.map(|search| {
            let search = literal(search);
            (format!("{search}%"), format!("%{}%", search.to_lowercase()))
        });
        with_connection!(self, |conn| {
            let mut query = checkout_sessions::table
                .select(SessionRow::as_select())
                .order((
                    checkout_sessions::created_at.desc(),
                    checkout_sessions::id.desc(),
                ))
                .limit(limit)
                .into_boxed();
            if let Some((id_prefix, email_part)) = &patterns {
                let by_id = checkout_sessions::id.like(id_prefix).escape('\\');
                let by_email = lower(checkout_sessions::customer_email)
                    .like(email_part)
                    .escape('\\');
                query = query.filter(by_id.or(by_email));
            }
            query
                .load::<SessionRow>(conn)
                .await
                .context("could not list sessions")
        })
    }

    /// One session's row, if it was recorded.
    pub async fn session_row(&self, id: &str) -> anyhow::Result<Option<SessionRow>> {
        with_connection!(self, |conn| {
            checkout_sessions::table
                .find(id)
                .select(SessionRow::as_select())
                .first::<SessionRow>(conn)
                .await
                .optional()
                .context("could not read the session")
        })
    }

    /// The refunds and disputes stored for session `id`'s payment intent, oldest first.
    pub async fn reversals_of(&self, id: &str) -> anyhow::Result<Vec<ReversalRow>> {
        with_connection!(self, |conn| {
            refunds::table
                .inner_join(
                    checkout_sessions::table
                        .on(checkout_sessions::payment_intent
                            .eq(refunds::payment_intent.nullable())),
                )
                .filter(checkout_sessions::id.eq(id))
                .order((refunds::created_at, refunds::id))
                .select(ReversalRow::as_select())
                .load::<ReversalRow>(conn)
                .await
                .context("could not read the session's refunds and disputes")
        })
    }

    /// Every SKU's stock, by SKU.
    pub async fn stock_levels(&self) -> anyhow::Result<Vec<StockRow>> {
        with_connection!(self, |conn| {
            inventory::table
                .order(inventory::sku)
                .select(StockRow::as_select())
                .load::<StockRow>(conn)
                .await
                .context("could not read the stock")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::literal;

    #[test]
    fn like_wildcards_are_matched_literally() {
        assert_eq!(literal("cs_test_a%b\\"), "cs\\_test\\_a\\%b\\\\");
    }
}
