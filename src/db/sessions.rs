//! Checkout Sessions, their line items and the effects their fulfillment enqueues.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{checkout_sessions, effects, line_items};
use super::{Database, now_ms, with_connection};
use crate::domain::{LineItem, Outcome, SessionId, SessionSummary, Status};

/// Effect kinds enqueued with each status, carried out by the side-effect actors.
fn effects_for(status: Status) -> &'static [&'static str] {
    match status {
        Status::Fulfilled => &["receipt"],
        Status::PaymentFailed => &["payment_failed_email"],
        Status::AwaitingPayment | Status::Expired => &[],
    }
}

/// A status to record for a session, with what was learnt about it.
pub struct Record<'a> {
    pub summary: &'a SessionSummary,
    pub status: Status,
    /// Written only when the record fulfills the session.
    pub line_items: &'a [LineItem],
}

/// The result of [`Database::record`].
#[derive(Debug)]
pub struct Recorded {
    /// The session's outcome as stored after the transaction.
    pub outcome: Outcome,
    /// True when this call made the transition (and enqueued its effects); false when the
    /// session already had this or a terminal status, recorded by this or another process.
    pub claimed: bool,
}

#[derive(Insertable)]
#[diesel(table_name = checkout_sessions, treat_none_as_default_value = false)]
struct SessionRow<'a> {
    id: &'a str,
    status: &'a str,
    livemode: bool,
    currency: Option<&'a str>,
    amount_total: Option<i64>,
    customer_email: Option<&'a str>,
    fulfilled_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Queryable)]
struct StoredSession {
    id: String,
    status: String,
    livemode: bool,
    currency: Option<String>,
    amount_total: Option<i64>,
    fulfilled_at: Option<i64>,
}

#[derive(Insertable, Queryable)]
#[diesel(table_name = line_items, treat_none_as_default_value = false)]
struct LineItemRow {
    session_id: String,
    line_number: i32,
    id: String,
    price_id: Option<String>,
    product_id: Option<String>,
    description: String,
    quantity: i64,
    currency: String,
    unit_amount: Option<i64>,
    amount_subtotal: i64,
    amount_total: i64,
}

#[derive(Insertable)]
#[diesel(table_name = effects)]
struct EffectRow<'a> {
    session_id: &'a str,
    kind: &'a str,
    status: &'a str,
    attempts: i32,
    next_attempt_at: i64,
    created_at: i64,
    updated_at: i64,
}

impl Database {
    /// The stored outcome of a session, if fulfilld has recorded anything for it.
    pub async fn outcome(&self, id: &SessionId) -> anyhow::Result<Option<Outcome>> {
        with_connection!(self, |conn| {
            let session = checkout_sessions::table
                .find(id.as_str())
                .select(STORED_SESSION_COLUMNS)
                .first::<StoredSession>(conn)
                .await
                .optional()
                .context("could not read the session")?;
            let Some(session) = session else {
                return Ok(None);
            };
            let items = line_items::table
                .filter(line_items::session_id.eq(id.as_str()))
                .order(line_items::line_number)
                .load::<LineItemRow>(conn)
                .await
                .context("could not read the session's line items")?;
            Ok(Some(to_outcome(session, items)?))
        })
    }

    /// Records `record.status` for a session in one transaction, if the session has no
    /// status yet or is awaiting payment. The claim is the primary key (insert, or
    /// update from `awaiting_payment` only), so of several processes racing, exactly one
    /// makes each transition; a fulfillment writes its line items and enqueues its
    /// effects in the same transaction.
    pub async fn record(&self, record: Record<'_>) -> anyhow::Result<Recorded> {
        let now = now_ms();
        let summary = record.summary;
        let status = record.status;
        let id = summary.id.as_str();
        let row = SessionRow {
            id,
            status: status.as_str(),
            livemode: summary.livemode,
            currency: summary.currency.as_deref(),
            amount_total: summary.amount_total,
            customer_email: summary.customer_email.as_deref(),
            fulfilled_at: (status == Status::Fulfilled).then_some(now),
            created_at: now,
            updated_at: now,
        };
        let items = line_item_rows(id, record.line_items);
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                let mut claimed = diesel::insert_into(checkout_sessions::table)
                    .values(&row)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?
                    == 1;
                if !claimed && status != Status::AwaitingPayment {
                    claimed =
                        diesel::update(checkout_sessions::table.find(id).filter(
                            checkout_sessions::status.eq(Status::AwaitingPayment.as_str()),
                        ))
                        .set((
                            checkout_sessions::status.eq(row.status),
                            checkout_sessions::currency.eq(row.currency),
                            checkout_sessions::amount_total.eq(row.amount_total),
                            checkout_sessions::customer_email.eq(row.customer_email),
                            checkout_sessions::fulfilled_at.eq(row.fulfilled_at),
                            checkout_sessions::updated_at.eq(now),
                        ))
                        .execute(conn)
                        .await?
                            == 1;
                }
                if claimed {
                    if status == Status::Fulfilled {
                        // One statement per row: diesel-async has no multi-row insert for
                        // SQLite, and the statement is prepared once per connection.
                        for item in &items {
                            diesel::insert_into(line_items::table)
                                .values(item)
                                .execute(conn)
                                .await?;
                        }
                    }
                    let effects: Vec<_> = effects_for(status)
                        .iter()
                        .map(|kind| EffectRow {
                            session_id: id,
                            kind,
                            status: "pending",
                            attempts: 0,
                            next_attempt_at: now,
                            created_at: now,
                            updated_at: now,
                        })
                        .collect();
                    for effect in &effects {
                        diesel::insert_into(effects::table)
                            .values(effect)
                            .on_conflict_do_nothing()
                            .execute(conn)
                            .await?;
                    }
                }
                let session = checkout_sessions::table
                    .find(id)
                    .select(STORED_SESSION_COLUMNS)
                    .first::<StoredSession>(conn)
                    .await?;
                let stored_items = if session.status == Status::Fulfilled.as_str() {
                    line_items::table
                        .filter(line_items::session_id.eq(id))
                        .order(line_items::line_number)
                        .load::<LineItemRow>(conn)
                        .await?
                } else {
                    Vec::new()
                };
                Ok::<_, anyhow::Error>(Recorded {
                    outcome: to_outcome(session, stored_items)?,
                    claimed,
                })
            })
            .await
            .context("could not record the session")
        })
    }
}

const STORED_SESSION_COLUMNS: (
    checkout_sessions::id,
    checkout_sessions::status,
    checkout_sessions::livemode,
    checkout_sessions::currency,
    checkout_sessions::amount_total,
    checkout_sessions::fulfilled_at,
) = (
    checkout_sessions::id,
    checkout_sessions::status,
    checkout_sessions::livemode,
    checkout_sessions::currency,
    checkout_sessions::amount_total,
    checkout_sessions::fulfilled_at,
);

fn line_item_rows(session_id: &str, items: &[LineItem]) -> Vec<LineItemRow> {
    items
        .iter()
        .zip(1..)
        .map(|(item, line_number)| LineItemRow {
            session_id: session_id.to_owned(),
            line_number,
            id: item.id.clone(),
            price_id: item.price_id.clone(),
            product_id: item.product_id.clone(),
            description: item.description.clone(),
            quantity: item.quantity,
            currency: item.currency.clone(),
            unit_amount: item.unit_amount,
            amount_subtotal: item.amount_subtotal,
            amount_total: item.amount_total,
        })
        .collect()
}

fn to_outcome(session: StoredSession, items: Vec<LineItemRow>) -> anyhow::Result<Outcome> {
    let status = Status::parse(&session.status)
        .with_context(|| format!("unknown status {:?} in the database", session.status))?;
    Ok(Outcome {
        session_id: session.id,
        status,
        livemode: session.livemode,
        currency: session.currency,
        amount_total: session.amount_total,
        fulfilled_at: session.fulfilled_at,
        line_items: items
            .into_iter()
            .map(|row| LineItem {
                id: row.id,
                price_id: row.price_id,
                product_id: row.product_id,
                description: row.description,
                quantity: row.quantity,
                currency: row.currency,
                unit_amount: row.unit_amount,
                amount_subtotal: row.amount_subtotal,
                amount_total: row.amount_total,
            })
            .collect(),
    })
}

impl Database {
    /// The effects enqueued for a session, as (kind, status), oldest first.
    pub async fn effects_of(&self, id: &SessionId) -> anyhow::Result<Vec<(String, String)>> {
        with_connection!(self, |conn| {
            effects::table
                .filter(effects::session_id.eq(id.as_str()))
                .order(effects::id)
                .select((effects::kind, effects::status))
                .load::<(String, String)>(conn)
                .await
                .context("could not read the session's effects")
        })
    }
}
