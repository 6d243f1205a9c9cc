//! The rows a record writes once it holds its claim, and how they are sent: one statement
//! after another on SQLite, pipelined on PostgreSQL. A fulfilment writes about eight rows;
//! pipelined, they cost one round trip instead of eight.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::{try_join, try_join_all};

use super::super::outcomes::LineItemRow;
use super::super::prepared::Prepared;
use super::super::reservations::held;
use super::super::schema::{
    access_grants, checkout_sessions, effects, line_items, refunds, reservations, shipments,
    stock_movements, webhook_events,
};
use super::super::sqlite::Connection as SqliteConnection;
use super::super::types::DbNow;
use crate::domain::{EffectKind, EffectStatus, ShipmentStatus, Status};

#[derive(Insertable)]
#[diesel(table_name = checkout_sessions, treat_none_as_default_value = false)]
pub(super) struct SessionRow<'a> {
    pub id: &'a str,
    pub status: Status,
    pub livemode: bool,
    pub currency: Option<&'a str>,
    pub amount_total: Option<i64>,
    pub customer_email: Option<&'a str>,
    pub shipping_address: Option<String>,
    pub fulfilled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub account: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
}

#[derive(Insertable)]
#[diesel(table_name = effects)]
pub(super) struct EffectRow<'a> {
    pub session_id: &'a str,
    pub kind: EffectKind,
    pub subject: &'a str,
    pub body: Option<&'a str>,
    pub status: EffectStatus,
    pub attempts: i32,
    /// Due at once, by the database's clock.
    pub next_attempt_at: DbNow,
    pub created_at: i64,
    pub updated_at: i64,
    /// The record's trace, when traces are exported.
    pub traceparent: Option<&'a str>,
}

#[derive(Insertable)]
#[diesel(table_name = stock_movements, treat_none_as_default_value = false)]
pub(super) struct MovementRow<'a> {
    pub session_id: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
    pub applied_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = access_grants)]
pub(super) struct GrantRow<'a> {
    pub session_id: &'a str,
    pub sku: &'a str,
    pub name: &'a str,
    pub url: &'a str,
    pub created_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = shipments)]
pub(super) struct ShipmentRow<'a> {
    pub session_id: &'a str,
    pub status: ShipmentStatus,
    pub items: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One statement of a record after its claim. None depends on another's result, so they
/// may be sent together.
#[derive(Clone, Copy)]
pub(super) enum Write<'a> {
    /// Items stored while the payment was pending are kept as they are.
    LineItem(&'a LineItemRow),
    Movement(&'a MovementRow<'a>),
    Grant(&'a GrantRow<'a>),
    Shipment(&'a ShipmentRow<'a>),
    Effect(&'a EffectRow<'a>),
    /// The session's stock holds, settled as its new status says.
    Reservations {
        session: &'a str,
        state: &'static str,
        now: i64,
    },
    /// The stored event the record carries out, marked processed and its claim let go.
    Processed {
        event: &'a str,
        now: i64,
    },
}

/// The future that runs one [`Write`] on `$conn`. A macro, so that one text serves both
/// backends' connection types.
macro_rules! statement {
    ($conn:expr, $write:expr) => {
        match $write {
            Write::LineItem(row) => diesel::insert_into(line_items::table)
                .values(*row)
                .on_conflict_do_nothing()
                .execute($conn),
            Write::Movement(row) => diesel::insert_into(stock_movements::table)
                .values(*row)
                .execute($conn),
            Write::Grant(row) => diesel::insert_into(access_grants::table)
                .values(*row)
                .execute($conn),
            Write::Shipment(row) => diesel::insert_into(shipments::table)
                .values(*row)
                .execute($conn),
            Write::Effect(row) => diesel::insert_into(effects::table)
                .values(*row)
                .on_conflict_do_nothing()
                .execute($conn),
            Write::Reservations {
                session,
                state,
                now,
            } => Prepared(
                diesel::update(
                    reservations::table
                        .filter(reservations::session_id.eq(*session))
                        .filter(held()),
                )
                .set((
                    reservations::state.eq(*state),
                    reservations::settled_at.eq(*now),
                )),
            )
            .execute($conn),
            Write::Processed { event, now } => Prepared(
                diesel::update(
                    webhook_events::table
                        .find(*event)
                        .filter(webhook_events::processed_at.is_null()),
                )
                .set((
                    webhook_events::processed_at.eq(*now),
                    webhook_events::lease_until.eq(None::<i64>),
                )),
            )
            .execute($conn),
        }
    };
}

/// Whether refunds are stored for `$payment_intent`, as a future on `$conn`.
macro_rules! refunds_stored {
    ($conn:expr, $payment_intent:expr) => {
        diesel::select(diesel::dsl::exists(
            refunds::table.filter(refunds::payment_intent.eq($payment_intent)),
        ))
        .get_result::<bool>($conn)
    };
}

/// Runs a record's writes on a connection, inside the caller's transaction, and looks
/// whether refunds are already stored for `refunds_of`, the payment intent of a session
/// it fulfils (refund news whose own attempt stopped before it applied them).
pub(super) trait SendWrites {
    async fn send(&mut self, writes: &[Write<'_>], refunds_of: Option<&str>) -> QueryResult<bool>;
}

impl SendWrites for SqliteConnection {
    /// One after another: SQLite runs in this process, so a statement costs no round trip.
    async fn send(&mut self, writes: &[Write<'_>], refunds_of: Option<&str>) -> QueryResult<bool> {
        for write in writes {
            statement!(self, write).await?;
        }
        match refunds_of {
            Some(payment_intent) => refunds_stored!(self, payment_intent).await,
            None => Ok(false),
        }
    }
}

impl SendWrites for AsyncPgConnection {
    /// All at once, the look at the refunds too: each is sent before the first answer is
    /// awaited, and the server runs them in the order sent. If one fails, the transaction
    /// is aborted, the rest fail with it, and the first error is returned.
    async fn send(&mut self, writes: &[Write<'_>], refunds_of: Option<&str>) -> QueryResult<bool> {
        let mut conn: &AsyncPgConnection = self;
        let pending: Vec<_> = writes
            .iter()
            .map(|write| statement!(&mut conn, write))
            .collect();
        let refunds = async {
            match refunds_of {
                Some(payment_intent) => refunds_stored!(&mut conn, payment_intent).await,
                None => Ok(false),
            }
        };
        let (_, stored) = try_join(try_join_all(pending), refunds).await?;
        Ok(stored)
    }
}
