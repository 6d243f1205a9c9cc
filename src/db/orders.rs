//! Fulfilled orders read out for the books, a page at a time.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{checkout_sessions, line_items};
use super::{Database, with_connection};

/// One line of a fulfilled order, as the export writes it.
#[derive(Debug, Clone, Queryable)]
pub struct OrderLine {
    pub session_id: String,
    pub line_number: i32,
    /// Milliseconds since the epoch.
    pub fulfilled_at: i64,
    pub customer_email: Option<String>,
    pub status: String,
    pub livemode: bool,
    pub account: Option<String>,
    /// The session's refunded total, in minor units.
    pub amount_refunded: i64,
    pub price_id: Option<String>,
    pub description: String,
    pub quantity: i64,
    /// The line's total, in minor units of `currency`.
    pub amount: i64,
    pub currency: String,
}

/// Where the next page starts: after this (fulfilled_at, session, line).
pub type OrderCursor = (i64, String, i32);

impl Database {
    /// How many lines of orders fulfilled at or after `since` (ms) there are.
    pub async fn count_order_lines(&self, since: i64) -> anyhow::Result<i64> {
        with_connection!(self, |conn| {
            line_items::table
                .inner_join(checkout_sessions::table)
                .filter(checkout_sessions::fulfilled_at.ge(since))
                .count()
                .get_result(conn)
                .await
                .context("could not count the orders")
        })
    }

    /// Up to `limit` lines of orders fulfilled at or after `since` (ms), in the order
    /// they were fulfilled, after `cursor`: one page of the export, found by the index
    /// whatever page it is.
    pub async fn order_lines(
        &self,
        since: i64,
        cursor: Option<&OrderCursor>,
        limit: i64,
    ) -> anyhow::Result<Vec<OrderLine>> {
        let (at, session, line) = cursor.cloned().unwrap_or((since, String::new(), -1));
        with_connection!(self, |conn| {
            line_items::table
                .inner_join(checkout_sessions::table)
                // The index's range starts at the cursor; only the rows fulfilled in the
                // cursor's own millisecond are looked at twice.
                .filter(checkout_sessions::fulfilled_at.ge(at.max(since)))
                .filter(
                    checkout_sessions::fulfilled_at
                        .gt(at)
                        .or(checkout_sessions::fulfilled_at.eq(at).and(
                            checkout_sessions::id.gt(&session).or(checkout_sessions::id
                                .eq(&session)
                                .and(line_items::line_number.gt(line))),
                        )),
                )
                .order((
                    checkout_sessions::fulfilled_at,
                    checkout_sessions::id,
                    line_items::line_number,
                ))
                .limit(limit)
                .select((
                    checkout_sessions::id,
                    line_items::line_number,
                    checkout_sessions::fulfilled_at.assume_not_null(),
                    checkout_sessions::customer_email,
                    checkout_sessions::status,
                    checkout_sessions::livemode,
                    checkout_sessions::account,
                    checkout_sessions::amount_refunded,
                    line_items::price_id,
                    line_items::description,
                    line_items::quantity,
                    line_items::amount_total,
                    line_items::currency,
                ))
                .load::<OrderLine>(conn)
                .await
                .context("could not read the orders")
        })
    }
}
