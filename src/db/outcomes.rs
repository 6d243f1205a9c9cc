//! Reading back what was recorded for a session: the outcome every caller is shown.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{checkout_sessions, line_items, webhook_events};
use super::{Database, with_connection};
use crate::domain::{
    AccessGrant, LineItem, Outcome, SessionId, Shipment, ShipmentStatus, ShippingAddress, Status,
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = checkout_sessions)]
pub(super) struct StoredSession {
    id: String,
    status: Status,
    livemode: bool,
    currency: Option<String>,
    amount_total: Option<i64>,
    shipping_address: Option<String>,
    fulfilled_at: Option<i64>,
    account: Option<String>,
}

#[derive(Insertable, Queryable)]
#[diesel(table_name = line_items, treat_none_as_default_value = false)]
pub(super) struct LineItemRow {
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

/// Everything stored about one session, read on any connection.
pub(super) struct StoredOutcome {
    pub session: StoredSession,
    pub items: Vec<LineItemRow>,
    pub grants: Vec<(String, String, String)>,
    pub shipment: Option<(ShipmentStatus, String)>,
}

/// Reads a session's stored outcome as `Option<Outcome>` on `$conn`, inside an async
/// context whose error type takes diesel's and anyhow's errors. A macro, so that one text
/// serves both backends and any open transaction.
macro_rules! read_outcome {
    ($conn:ident, $id:expr) => {{
        use $crate::db::outcomes::{LineItemRow, StoredOutcome, StoredSession};
        use $crate::db::schema::{access_grants, checkout_sessions, line_items, shipments};
        use $crate::domain::ShipmentStatus;
        let id: &str = $id;
        let session = checkout_sessions::table
            .find(id)
            .select(StoredSession::as_select())
            .first::<StoredSession>($conn)
            .await
            .optional()?;
        match session {
            None => None,
            Some(session) => {
                let items = line_items::table
                    .filter(line_items::session_id.eq(id))
                    .order(line_items::line_number)
                    .load::<LineItemRow>($conn)
                    .await?;
                let grants = access_grants::table
                    .filter(access_grants::session_id.eq(id))
                    .order(access_grants::sku)
                    .select((access_grants::sku, access_grants::name, access_grants::url))
                    .load::<(String, String, String)>($conn)
                    .await?;
                let shipment = shipments::table
                    .find(id)
                    .select((shipments::status, shipments::items))
                    .first::<(ShipmentStatus, String)>($conn)
                    .await
                    .optional()?;
                Some(
                    StoredOutcome {
                        session,
                        items,
                        grants,
                        shipment,
                    }
                    .into_outcome()?,
                )
            }
        }
    }};
}
pub(crate) use read_outcome;

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
            fulfilled_at: session.fulfilled_at,
            line_items: self
                .items
                .into_iter()
                .map(LineItemRow::into_line_item)
                .collect(),
            access: self
                .grants
                .into_iter()
                .map(|(sku, name, url)| AccessGrant { sku, name, url })
                .collect(),
            shipment,
        })
    }
}

impl Database {
    /// The stored outcome of a session, if fulfilld has recorded anything for it.
    pub async fn outcome(&self, id: &SessionId) -> anyhow::Result<Option<Outcome>> {
        with_connection!(self, |conn| {
            let read = async { Ok::<_, anyhow::Error>(read_outcome!(conn, id.as_str())) };
            read.await.context("could not read the session")
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

    /// Where a session's emails go. Never logged.
    pub async fn customer_email(&self, id: &str) -> anyhow::Result<Option<String>> {
        with_connection!(self, |conn| {
            checkout_sessions::table
                .find(id)
                .select(checkout_sessions::customer_email)
                .first::<Option<String>>(conn)
                .await
                .optional()
                .map(Option::flatten)
                .context("could not read the session's email address")
        })
    }
}
