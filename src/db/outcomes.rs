//! Reading back what was recorded for a session: the outcome every caller is shown.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;

use super::prepared::Prepared;
use super::schema::{access_grants, checkout_sessions, line_items, shipments, webhook_events};
use super::sqlite::Connection as SqliteConnection;
use super::{Database, with_connection};
use crate::domain::{
    AccessGrant, GrantStatus, LineItem, Outcome, SessionId, Shipment, ShipmentStatus,
    ShippingAddress, Status,
};

#[derive(Queryable, QueryableByName, Selectable)]
#[diesel(table_name = checkout_sessions)]
pub(super) struct StoredSession {
    pub id: String,
    pub status: Status,
    pub livemode: bool,
    pub currency: Option<String>,
    pub amount_total: Option<i64>,
    pub shipping_address: Option<String>,
    pub fulfilled_at: Option<i64>,
    pub account: Option<String>,
    pub amount_refunded: i64,
    /// Kept out of the [`Outcome`]: only the emails read it.
    pub customer_email: Option<String>,
}

#[derive(Clone, Insertable, Queryable, Deserialize)]
#[diesel(table_name = line_items, treat_none_as_default_value = false)]
pub(super) struct LineItemRow {
    pub(super) session_id: String,
    pub(super) line_number: i32,
    pub(super) id: String,
    pub(super) price_id: Option<String>,
    pub(super) product_id: Option<String>,
    pub(super) description: String,
    pub(super) quantity: i64,
    pub(super) currency: String,
    pub(super) unit_amount: Option<i64>,
    pub(super) amount_subtotal: i64,
    pub(super) amount_total: i64,
}

impl LineItemRow {
    pub(super) fn for_session(session_id: &str, items: &[LineItem]) -> Vec<Self> {
        items
            .iter()
            .zip(1..)
            .map(|(item, line_number)| Self {
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

    fn into_line_item(self) -> LineItem {
        LineItem {
            id: self.id,
            price_id: self.price_id,
            product_id: self.product_id,
            description: self.description,
            quantity: self.quantity,
            currency: self.currency,
            unit_amount: self.unit_amount,
            amount_subtotal: self.amount_subtotal,
            amount_total: self.amount_total,
        }
    }
}

/// A grant as read: SKU, name, link, when it was revoked and when suspended.
pub(super) type GrantRow = (String, String, String, Option<i64>, Option<i64>);

/// Grants in the order of their SKUs' bytes, whatever the database's collation: a record
/// that builds its outcome from its own writes sorts them the same way.
fn grants_by_sku(mut grants: Vec<GrantRow>) -> Vec<GrantRow> {
    grants.sort_by(|a, b| a.0.cmp(&b.0));
    grants
}

/// Everything stored about one session, read on any connection.
pub(super) struct StoredOutcome {
    pub session: StoredSession,
    pub items: Vec<LineItemRow>,
    pub grants: Vec<GrantRow>,
    pub shipment: Option<(ShipmentStatus, String)>,
}

/// Reads everything stored about a session on a connection, inside any open transaction.
pub(super) trait ReadOutcome {
    async fn read_outcome(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>>;
}

impl ReadOutcome for SqliteConnection {
    /// One statement after another, each skipped when the session is not recorded.
    async fn read_outcome(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>> {
        let Some(session) = checkout_sessions::table
            .find(id)
            .select(StoredSession::as_select())
            .load::<StoredSession>(self)
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let items = line_items::table
            .filter(line_items::session_id.eq(id))
            .order(line_items::line_number)
            .load::<LineItemRow>(self)
            .await?;
        let grants = access_grants::table
            .filter(access_grants::session_id.eq(id))
            .order(access_grants::sku)
            .select((
                access_grants::sku,
                access_grants::name,
                access_grants::url,
                access_grants::revoked_at,
                access_grants::suspended_at,
            ))
            .load::<GrantRow>(self)
            .await?;
        let shipment = shipments::table
            .find(id)
            .select((shipments::status, shipments::items))
            .load::<(ShipmentStatus, String)>(self)
            .await?
            .pop();
        Ok(Some(StoredOutcome {
            session,
            items,
            grants,
            shipment,
        }))
    }
}

/// A session's row with its items, grants and shipment, in one statement: the items and
/// grants aggregated as JSON arrays, null when there are none. The items' keys are named
/// one by one, as [`LineItemRow`]'s fields are.
const OUTCOME_POSTGRES: &str = "SELECT session.id, session.status, session.livemode, \
     session.currency, session.amount_total, session.shipping_address, session.fulfilled_at, \
     session.account, session.amount_refunded, session.customer_email, \
     (SELECT json_agg(json_build_object('session_id', session_id, 'line_number', line_number, \
     'id', id, 'price_id', price_id, 'product_id', product_id, 'description', description, \
     'quantity', quantity, 'currency', currency, 'unit_amount', unit_amount, \
     'amount_subtotal', amount_subtotal, 'amount_total', amount_total) \
     ORDER BY line_number)::text FROM line_items WHERE line_items.session_id = session.id) AS items, \
     (SELECT json_agg(json_build_array(sku, name, url, revoked_at, suspended_at))::text \
     FROM access_grants WHERE access_grants.session_id = session.id) AS grants, \
     shipments.status AS shipment_status, shipments.items AS shipment_items \
     FROM checkout_sessions session LEFT JOIN shipments ON shipments.session_id = session.id \
     WHERE session.id = $1";

#[derive(QueryableByName)]
struct OutcomeRow {
    #[diesel(embed)]
    session: StoredSession,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    items: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    grants: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    shipment_status: Option<ShipmentStatus>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    shipment_items: Option<String>,
}

impl OutcomeRow {
    fn into_stored(self) -> QueryResult<StoredOutcome> {
        fn parsed<T: serde::de::DeserializeOwned>(json: Option<String>) -> QueryResult<Vec<T>> {
            json.map_or(Ok(Vec::new()), |json| {
                serde_json::from_str(&json)
                    .map_err(|error| diesel::result::Error::DeserializationError(error.into()))
            })
        }
        Ok(StoredOutcome {
            session: self.session,
            items: parsed(self.items)?,
            grants: parsed(self.grants)?,
            shipment: self.shipment_status.zip(self.shipment_items),
        })
    }
}

impl ReadOutcome for AsyncPgConnection {
    /// One statement, whether the session is recorded or not, and one snapshot.
    async fn read_outcome(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>> {
        let read = diesel::sql_query(OUTCOME_POSTGRES).bind::<diesel::sql_types::Text, _>(id);
        let row = Prepared(read)
            .get_result::<OutcomeRow>(self)
            .await
            .optional()?;
        row.map(OutcomeRow::into_stored).transpose()
    }
}

impl StoredOutcome {
    pub(super) fn into_outcome(self) -> anyhow::Result<Outcome> {
        let session = self.session;
        let address = session
            .shipping_address
            .as_deref()
            .map(serde_json::from_str::<ShippingAddress>)
            .transpose()
            .context("unreadable shipping address in the database")?;
        let shipment = self
            .shipment
            .map(|(status, items)| -> anyhow::Result<Shipment> {
                Ok(Shipment {
                    status,
                    address: address.clone(),
                    items: serde_json::from_str(&items)
                        .context("unreadable shipment items in the database")?,
                })
            })
            .transpose()?;
        Ok(Outcome {
            session_id: session.id,
            account: session.account,
            status: session.status,
            livemode: session.livemode,
            currency: session.currency,
            amount_total: session.amount_total,
            amount_refunded: session.amount_refunded,
            fulfilled_at: session.fulfilled_at,
            line_items: self
                .items
                .into_iter()
                .map(LineItemRow::into_line_item)
                .collect(),
            access: grants_by_sku(self.grants)
                .into_iter()
                .map(|(sku, name, url, revoked_at, suspended_at)| AccessGrant {
                    sku,
                    name,
                    url,
                    status: GrantStatus::of(revoked_at, suspended_at),
                })
                .collect(),
            shipment,
        })
    }
}

impl Database {
    /// The connected accounts fulfilld has seen a session or an event of since `since`
    /// (ms).
    pub async fn connected_accounts(&self, since: i64) -> anyhow::Result<Vec<String>> {
        let (mut accounts, events) = with_connection!(self, |conn| {
            let sessions: Vec<Option<String>> = checkout_sessions::table
                .filter(checkout_sessions::account.is_not_null())
                .filter(checkout_sessions::created_at.ge(since))
                .select(checkout_sessions::account)
                .distinct()
                .load(conn)
                .await
                .context("could not list the connected accounts")?;
            let events: Vec<Option<String>> = webhook_events::table
                .filter(webhook_events::account.is_not_null())
                .filter(webhook_events::received_at.ge(since))
                .select(webhook_events::account)
                .distinct()
                .load(conn)
                .await
                .context("could not list the connected accounts")?;
            Ok::<_, anyhow::Error>((sessions, events))
        })?;
        accounts.extend(events);
        let mut accounts: Vec<String> = accounts.into_iter().flatten().collect();
        accounts.sort();
        accounts.dedup();
        Ok(accounts)
    }

    /// The stored outcome of a session, if fulfilld has recorded anything for it.
    pub async fn outcome(&self, id: &SessionId) -> anyhow::Result<Option<Outcome>> {
        let read = self.outcome_and_email(id).await?;
        Ok(read.map(|(outcome, _)| outcome))
    }

    /// The connected account (Stripe Connect) a stored event of the session names, if
    /// any: what tells the account of a session not recorded yet.
    pub async fn event_account(&self, id: &SessionId) -> anyhow::Result<Option<String>> {
        with_connection!(self, |conn| {
            webhook_events::table
                .filter(webhook_events::session_id.eq(id.as_str()))
                .filter(webhook_events::account.is_not_null())
                .select(webhook_events::account)
                .first::<Option<String>>(conn)
                .await
                .optional()
                .map(Option::flatten)
                .context("could not read the session's events")
        })
    }

    /// Whether anything about the session is stored: a record, or a signed event.
    pub async fn knows_session(&self, id: &SessionId) -> anyhow::Result<bool> {
        with_connection!(self, |conn| {
            let read = async {
                let recorded = checkout_sessions::table
                    .find(id.as_str())
                    .count()
                    .get_result::<i64>(conn)
                    .await?;
                if recorded > 0 {
                    return Ok(true);
                }
                let events = webhook_events::table
                    .filter(webhook_events::session_id.eq(id.as_str()))
                    .count()
                    .get_result::<i64>(conn)
                    .await?;
                Ok::<_, diesel::result::Error>(events > 0)
            };
            read.await.context("could not look the session up")
        })
    }

    /// A session's stored outcome with the address its emails go to, in one read. The
    /// address is never logged.
    pub async fn outcome_and_email(
        &self,
        id: &SessionId,
    ) -> anyhow::Result<Option<(Outcome, Option<String>)>> {
        with_connection!(self, |conn| {
            let stored = conn
                .read_outcome(id.as_str())
                .await
                .context("could not read the session")?;
            stored
                .map(|stored| {
                    let email = stored.session.customer_email.clone();
                    Ok((stored.into_outcome()?, email))
                })
                .transpose()
        })
    }
}
