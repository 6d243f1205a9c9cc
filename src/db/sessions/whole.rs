//! A record that makes its session's row, in one statement on PostgreSQL.
//!
//! Nearly every record is the first news of its session: the row does not exist yet and no
//! refund waits for its payment. Such a record needs nothing read before it writes, so its
//! rows go in one statement of data-modifying `WITH` clauses. That is one round trip and
//! one executor run, and no `BEGIN` or `COMMIT` of its own, against the eleven statements
//! of a transaction. Each clause but the first writes only for the row the first one made,
//! so a record that finds the row there, or refunds stored, writes nothing and leaves its
//! work to the transaction in `super`, which handles every case.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::super::prepared::Prepared;
use super::super::sqlite::Connection as SqliteConnection;
use super::super::types::now_ms_sql;
use super::rows::{SessionRow, Write};
use crate::domain::EffectStatus;

/// What a record writes when it makes its session's row.
pub(super) struct Whole<'a> {
    pub row: &'a SessionRow<'a>,
    /// What the record writes once it holds its claim, the stored event aside.
    pub writes: &'a [Write<'a>],
    /// The stored event the record carries out, marked processed with it.
    pub event: Option<&'a str>,
    /// The payment intent of a session the record fulfils: refunds stored for it must be
    /// applied in the same transaction, so with any stored the statement writes nothing.
    pub fulfils: Option<&'a str>,
}

/// Records a [`Whole`] in one statement where that pays.
pub(super) trait RecordWhole {
    /// True when this made the session's row and wrote everything with it; false when it
    /// wrote nothing, and the record is left to a transaction.
    async fn record_whole(&mut self, whole: &Whole<'_>) -> QueryResult<bool>;
}

impl RecordWhole for SqliteConnection {
    /// Never: SQLite runs in this process, so a statement costs no round trip, and the
    /// transaction is a turn in a group that shares its commit anyway.
    async fn record_whole(&mut self, _whole: &Whole<'_>) -> QueryResult<bool> {
        Ok(false)
    }
}

/// The holds and the event are each found by their keys in a subquery the planner keeps
/// apart (`OFFSET 0`, `LIMIT 1`), and locked there, so that their state is checked on
/// their latest versions: with the state beside the key, the plan PostgreSQL caches read
/// every held reservation and every waiting event through the partial indexes on them.
///
/// `$1`–`$11` the session's row; `$12` the payment intent whose stored refunds stop the
/// statement; `$13`–`$22` the line items; `$23`–`$24` the stock movements; `$25`–`$27` the
/// grants; `$28`–`$29` the shipment, if any; `$30`–`$34` the effects; `$35` the state the
/// session's holds are settled to, if any; `$36` the event marked processed, if any.
const RECORD_WHOLE: &str = concat!(
    "WITH session AS (",
    "INSERT INTO checkout_sessions (id, status, livemode, currency, amount_total, ",
    "customer_email, shipping_address, fulfilled_at, created_at, updated_at, account, ",
    "payment_intent) ",
    "SELECT $1, $2, $3::boolean, $4, $5::bigint, $6, $7, $8::bigint, $9::bigint, $9, $10, $11 ",
    "WHERE $12::text IS NULL OR NOT EXISTS (SELECT 1 FROM refunds WHERE payment_intent = $12) ",
    "ON CONFLICT DO NOTHING RETURNING id), ",
    "items AS (",
    "INSERT INTO line_items (session_id, line_number, id, price_id, product_id, description, ",
    "quantity, currency, unit_amount, amount_subtotal, amount_total) ",
    "SELECT session.id, item.* FROM session, unnest($13::integer[], $14::text[], ",
    "$15::text[], $16::text[], $17::text[], $18::bigint[], $19::text[], $20::bigint[], ",
    "$21::bigint[], $22::bigint[]) AS item ON CONFLICT DO NOTHING), ",
    "movements AS (",
    "INSERT INTO stock_movements (session_id, sku, quantity, applied_at, created_at) ",
    "SELECT session.id, movement.sku, movement.quantity, NULL, $9 FROM session, ",
    "unnest($23::text[], $24::bigint[]) AS movement (sku, quantity)), ",
    "grants AS (",
    "INSERT INTO access_grants (session_id, sku, name, url, created_at) ",
    "SELECT session.id, grant_row.*, $9 FROM session, ",
    "unnest($25::text[], $26::text[], $27::text[]) AS grant_row), ",
    "shipment AS (",
    "INSERT INTO shipments (session_id, status, items, created_at, updated_at) ",
    "SELECT session.id, $28, $29, $9, $9 FROM session WHERE $28::text IS NOT NULL), ",
    "effect_rows AS (",
    "INSERT INTO effects (session_id, kind, subject, body, status, attempts, ",
    "next_attempt_at, created_at, updated_at, traceparent) ",
    "SELECT session.id, effect.kind, effect.subject, effect.body, $33, 0, ",
    now_ms_sql!(postgres),
    ", $9, $9, $34 FROM session, unnest($30::text[], $31::text[], $32::text[]) ",
    "AS effect (kind, subject, body) ON CONFLICT DO NOTHING), ",
    "holds AS (",
    "UPDATE reservations SET state = $35, settled_at = $9 FROM session, ",
    "LATERAL (SELECT id, sku, state FROM reservations r WHERE r.session_id = session.id ",
    "OFFSET 0 FOR UPDATE) AS hold ",
    "WHERE reservations.id = hold.id AND reservations.sku = hold.sku ",
    "AND hold.state = 'held' AND $35::text IS NOT NULL), ",
    "processed AS (",
    "UPDATE webhook_events SET processed_at = $9, lease_until = NULL FROM session, ",
    "LATERAL (SELECT id, processed_at FROM webhook_events e WHERE e.id = $36 ",
    "LIMIT 1 FOR UPDATE) AS event ",
    "WHERE webhook_events.id = event.id AND event.processed_at IS NULL) ",
    "SELECT EXISTS (SELECT 1 FROM session) AS inserted"
);

#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = Bool)]
    inserted: bool,
}

/// The writes of a [`Whole`] as the columns the statement unnests.
#[derive(Default)]
struct Columns<'a> {
    line_numbers: Vec<i32>,
    item_ids: Vec<&'a str>,
    price_ids: Vec<Option<&'a str>>,
    product_ids: Vec<Option<&'a str>>,
    descriptions: Vec<&'a str>,
    quantities: Vec<i64>,
    currencies: Vec<&'a str>,
    unit_amounts: Vec<Option<i64>>,
    subtotals: Vec<i64>,
    totals: Vec<i64>,
    movement_skus: Vec<&'a str>,
    movement_quantities: Vec<i64>,
    grant_skus: Vec<&'a str>,
    grant_names: Vec<&'a str>,
    grant_urls: Vec<&'a str>,
    shipment: Option<(&'a str, &'a str)>,
    effect_kinds: Vec<&'a str>,
    effect_subjects: Vec<&'a str>,
    effect_bodies: Vec<Option<&'a str>>,
    traceparent: Option<&'a str>,
    holds: Option<&'static str>,
}

impl<'a> Columns<'a> {
    fn of(writes: &'a [Write<'a>]) -> Self {
        let mut columns = Self::default();
        for write in writes {
            match write {
                Write::LineItem(item) => {
                    columns.line_numbers.push(item.line_number);
                    columns.item_ids.push(&item.id);
                    columns.price_ids.push(item.price_id.as_deref());
                    columns.product_ids.push(item.product_id.as_deref());
                    columns.descriptions.push(&item.description);
                    columns.quantities.push(item.quantity);
                    columns.currencies.push(&item.currency);
                    columns.unit_amounts.push(item.unit_amount);
                    columns.subtotals.push(item.amount_subtotal);
                    columns.totals.push(item.amount_total);
                }
                Write::Movement(movement) => {
                    columns.movement_skus.push(movement.sku);
                    columns.movement_quantities.push(movement.quantity);
                }
                Write::Grant(grant) => {
                    columns.grant_skus.push(grant.sku);
                    columns.grant_names.push(grant.name);
                    columns.grant_urls.push(grant.url);
                }
                Write::Shipment(shipment) => {
                    columns.shipment = Some((shipment.status.as_str(), &shipment.items));
                }
                Write::Effect(effect) => {
                    columns.effect_kinds.push(effect.kind.as_str());
                    columns.effect_subjects.push(effect.subject);
                    columns.effect_bodies.push(effect.body);
                    columns.traceparent = effect.traceparent;
                }
                Write::Reservations { state, .. } => columns.holds = Some(*state),
                Write::Processed { .. } => {}
            }
        }
        columns
    }
}

impl RecordWhole for AsyncPgConnection {
    async fn record_whole(&mut self, whole: &Whole<'_>) -> QueryResult<bool> {
        let row = whole.row;
        let columns = Columns::of(whole.writes);
        let (shipment_status, shipment_items) = columns.shipment.unzip();
        let statement = diesel::sql_query(RECORD_WHOLE)
            .bind::<Text, _>(row.id)
            .bind::<Text, _>(row.status)
            .bind::<Bool, _>(row.livemode)
            .bind::<Nullable<Text>, _>(row.currency)
            .bind::<Nullable<BigInt>, _>(row.amount_total)
            .bind::<Nullable<Text>, _>(row.customer_email)
            .bind::<Nullable<Text>, _>(row.shipping_address.as_deref())
            .bind::<Nullable<BigInt>, _>(row.fulfilled_at)
            .bind::<BigInt, _>(row.created_at)
            .bind::<Nullable<Text>, _>(row.account)
            .bind::<Nullable<Text>, _>(row.payment_intent)
            .bind::<Nullable<Text>, _>(whole.fulfils)
            .bind::<Array<Integer>, _>(columns.line_numbers)
            .bind::<Array<Text>, _>(columns.item_ids)
            .bind::<Array<Nullable<Text>>, _>(columns.price_ids)
            .bind::<Array<Nullable<Text>>, _>(columns.product_ids)
            .bind::<Array<Text>, _>(columns.descriptions)
            .bind::<Array<BigInt>, _>(columns.quantities)
            .bind::<Array<Text>, _>(columns.currencies)
            .bind::<Array<Nullable<BigInt>>, _>(columns.unit_amounts)
            .bind::<Array<BigInt>, _>(columns.subtotals)
            .bind::<Array<BigInt>, _>(columns.totals)
            .bind::<Array<Text>, _>(columns.movement_skus)
            .bind::<Array<BigInt>, _>(columns.movement_quantities)
            .bind::<Array<Text>, _>(columns.grant_skus)
            .bind::<Array<Text>, _>(columns.grant_names)
            .bind::<Array<Text>, _>(columns.grant_urls)
            .bind::<Nullable<Text>, _>(shipment_status)
            .bind::<Nullable<Text>, _>(shipment_items)
            .bind::<Array<Text>, _>(columns.effect_kinds)
            .bind::<Array<Text>, _>(columns.effect_subjects)
            .bind::<Array<Nullable<Text>>, _>(columns.effect_bodies)
            .bind::<Text, _>(EffectStatus::Pending)
            .bind::<Nullable<Text>, _>(columns.traceparent)
            .bind::<Nullable<Text>, _>(columns.holds)
            .bind::<Nullable<Text>, _>(whole.event);
        let inserted = Prepared(statement).get_result::<Inserted>(self).await?;
        Ok(inserted.inserted)
    }
}
