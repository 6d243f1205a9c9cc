//! Reading back what was recorded for a session: the outcome every caller is shown.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::{try_join, try_join3};

use super::schema::{access_grants, checkout_sessions, line_items, shipments, webhook_events};
use super::sqlite::Connection as SqliteConnection;
use super::{Database, with_connection};
use crate::domain::{
    AccessGrant, GrantStatus, LineItem, Outcome, SessionId, Shipment, ShipmentStatus,
    ShippingAddress, Status,
};

#[derive(Queryable, Selectable)]
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

#[derive(Clone, Insertable, Queryable)]
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

/// The query for one part of a session's stored outcome, as a future on `$conn` that
/// loads its rows. A macro, so that one text serves both backends' connection types.
macro_rules! outcome_query {
    (session, $conn:expr, $id:expr) => {
        checkout_sessions::table
            .find($id)
            .select(StoredSession::as_select())
            .load::<StoredSession>($conn)
    };
    (items, $conn:expr, $id:expr) => {
        line_items::table
            .filter(line_items::session_id.eq($id))
            .order(line_items::line_number)
            .load::<LineItemRow>($conn)
    };
    (grants, $conn:expr, $id:expr) => {
        access_grants::table
            .filter(access_grants::session_id.eq($id))
            .order(access_grants::sku)
            .select((
                access_grants::sku,
                access_grants::name,
                access_grants::url,
                access_grants::revoked_at,
                access_grants::suspended_at,
            ))
            .load::<GrantRow>($conn)
    };
    (shipment, $conn:expr, $id:expr) => {
        shipments::table
            .find($id)
            .select((shipments::status, shipments::items))
            .load::<(ShipmentStatus, String)>($conn)
    };
}

/// Reads everything stored about a session on a connection, inside any open transaction.
pub(super) trait ReadOutcome {
    /// For a session that is most likely recorded.
    async fn read_outcome(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>>;

    /// For a session that may well not be recorded yet: the session's row first, the rest
    /// only if it is there.
    async fn read_outcome_if_recorded(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>>;
}

impl ReadOutcome for SqliteConnection {
    async fn read_outcome_if_recorded(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>> {
        self.read_outcome(id).await
    }

    /// One statement after another, each skipped when the session is not recorded.
    async fn read_outcome(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>> {
        let Some(session) = outcome_query!(session, self, id).await?.pop() else {
            return Ok(None);
        };
        Ok(Some(StoredOutcome {
            session,
            items: outcome_query!(items, self, id).await?,
            grants: outcome_query!(grants, self, id).await?,
            shipment: outcome_query!(shipment, self, id).await?.pop(),
        }))
    }
}

impl ReadOutcome for AsyncPgConnection {
    /// The four reads pipelined: one round trip.
    async fn read_outcome(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>> {
        let mut conn: &AsyncPgConnection = self;
        let (mut session, rest) = try_join(
            outcome_query!(session, &mut conn, id),
            rest_of_outcome(self, id),
        )
        .await?;
        Ok(session.pop().map(|session| rest.with(session)))
    }

    /// The session's row, then the other three pipelined: one statement when it is not
    /// recorded (every fulfilment looks before it asks Stripe), two round trips when it is.
    async fn read_outcome_if_recorded(&mut self, id: &str) -> QueryResult<Option<StoredOutcome>> {
        let Some(session) = outcome_query!(session, &mut *self, id).await?.pop() else {
            return Ok(None);
        };
        Ok(Some(rest_of_outcome(self, id).await?.with(session)))
    }
}

/// What is stored about a session beside its own row.
struct RestOfOutcome {
    items: Vec<LineItemRow>,
    grants: Vec<GrantRow>,
    shipment: Option<(ShipmentStatus, String)>,
}

impl RestOfOutcome {
    fn with(self, session: StoredSession) -> StoredOutcome {
        StoredOutcome {
            session,
            items: self.items,
            grants: self.grants,
            shipment: self.shipment,
        }
    }
}

/// A session's items, grants and shipment, pipelined on `conn`: sent at the first poll,
/// together with whatever else is polled beside it.
async fn rest_of_outcome(mut conn: &AsyncPgConnection, id: &str) -> QueryResult<RestOfOutcome> {
    let (items, grants, mut shipment) = try_join3(
        outcome_query!(items, &mut conn, id),
        outcome_query!(grants, &mut conn, id),
        outcome_query!(shipment, &mut conn, id),
    )
    .await?;
    Ok(RestOfOutcome {
        items,
        grants,
        shipment: shipment.pop(),
    })
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

    /// [`Database::outcome`] for a session most likely not recorded yet, as a fulfilment
    /// asks before it calls Stripe: on PostgreSQL one statement when it is not, and one
    /// round trip more when it is. Like every read of an outcome outside a transaction,
    /// the row and the rest come from separate snapshots: the rest may be newer than the
    /// row (a refund that committed in between), never older.
    pub async fn outcome_if_recorded(&self, id: &SessionId) -> anyhow::Result<Option<Outcome>> {
        with_connection!(self, |conn| {
            conn.read_outcome_if_recorded(id.as_str())
                .await
                .context("could not read the session")?
                .map(StoredOutcome::into_outcome)
                .transpose()
        })
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
