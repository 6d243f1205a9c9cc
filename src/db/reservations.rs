//! Stock held while a customer pays: reserved when fulfilld creates the session, taken
//! when it is fulfilled, released when it expires or its payment fails.
//!
//! What a SKU has available is its stock, less the movements recorded but not yet applied
//! (fulfilments whose inventory effect has not run), less the holds still held. A hold
//! becomes its session's movement in the transaction that records the fulfilment, so the
//! units are counted once throughout. On PostgreSQL a reservation locks the SKUs' stock
//! rows, in SKU order, before it counts, so reservations of one SKU on any replica take
//! turns; on SQLite every write takes the database's one write lock.

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{checkout_sessions, reservations};
use super::{Database, now_ms, with_connection};
use crate::domain::Status;

/// A hold's state, as stored.
pub const HELD: &str = "held";
pub const TAKEN: &str = "taken";
pub const RELEASED: &str = "released";

/// Holds still held: `state = 'held'`, the value written out. Bound, SQLite would weigh it
/// against the partial indexes on held reservations when it prepared the statement, and
/// so prepare the statement again each time the value was bound: at every run.
pub fn held() -> diesel::dsl::Eq<reservations::state, diesel::expression::SqlLiteral<Text>> {
    reservations::state.eq(diesel::dsl::sql::<Text>("'held'"))
}

/// What [`Database::reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Every line is held until the session's expiry.
    Held,
    /// Nothing is held: `sku` has only `available` left.
    SoldOut { sku: String, available: i64 },
}

/// A hold whose session's expiry has passed: what the sweep looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReservation {
    pub id: String,
    /// `None` when Stripe never answered with a session (or the answer was not stored).
    pub session_id: Option<String>,
}

/// What a session's recorded status does to its holds: a fulfilled session's become its
/// stock movements, an expired or failed one's are released; a session still waiting for
/// its payment keeps them.
pub fn settled_state(status: Status) -> Option<&'static str> {
    match status {
        Status::Fulfilled | Status::Refunded | Status::PartiallyRefunded | Status::Disputed => {
            Some(TAKEN)
        }
        Status::Expired | Status::PaymentFailed => Some(RELEASED),
        Status::AwaitingPayment => None,
    }
}

/// Units of a SKU available: one statement, so that under READ COMMITTED its three
/// terms are read at one moment (a fulfilment turning a hold into a movement between
/// two separate reads would be counted in neither). A movement whose effect a full refund
/// cancelled is never applied, and holds nothing back.
macro_rules! available_sql {
    ($param:literal) => {
        concat!(
            "SELECT CAST(i.stock",
            " - COALESCE((SELECT SUM(m.quantity) FROM stock_movements m",
            " WHERE m.sku = i.sku AND m.applied_at IS NULL AND NOT EXISTS (SELECT 1",
            " FROM effects e WHERE e.session_id = m.session_id AND e.kind = 'inventory'",
            " AND e.status = 'cancelled')), 0)",
            " - COALESCE((SELECT SUM(r.quantity) FROM reservations r",
            " WHERE r.sku = i.sku AND r.state = 'held'), 0) AS BIGINT) AS available",
            " FROM inventory i WHERE i.sku = ",
            $param
        )
    };
}
const AVAILABLE_POSTGRES: &str = available_sql!("$1");
const AVAILABLE_SQLITE: &str = available_sql!("?");
/// Locks a SKU's stock row until the transaction ends; SQLite's one writer needs none.
const LOCK_POSTGRES: &str = "SELECT 1 AS available FROM inventory WHERE sku = $1 FOR UPDATE";

#[derive(QueryableByName)]
struct Available {
    #[diesel(sql_type = BigInt)]
    available: i64,
}

/// Runs `$sql` for `$sku` on `$conn`: the units available, 0 for a SKU with no stock row.
macro_rules! available {
    ($conn:expr, $sql:expr, $sku:expr) => {
        diesel::sql_query($sql)
            .bind::<Text, _>($sku)
            .get_result::<Available>($conn)
            .await
            .optional()?
            .map_or(0, |row| row.available)
    };
}

impl Database {
    /// Holds `lines` (SKU, quantity) under `id` until `expires_at` (ms), all or none: if
    /// any SKU has fewer units available than asked for, nothing is held and the first
    /// such SKU is named.
    pub async fn reserve(
        &self,
        id: &str,
        lines: &[(String, i64)],
        expires_at: i64,
    ) -> anyhow::Result<Reserved> {
        let now = now_ms();
        let mut lines = lines.to_vec();
        // SKU order: reservations lock stock rows in one order, so they never deadlock.
        lines.sort();
        let (lock, count) = self.available_statements();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                // Each SKU's stock row is locked first and counted after, in statements
                // of their own: under READ COMMITTED the count then sees every hold
                // committed by whoever held the lock before.
                if let Some(lock) = lock {
                    for (sku, _) in &lines {
                        diesel::sql_query(lock)
                            .bind::<Text, _>(sku)
                            .execute(conn)
                            .await?;
                    }
                }
                for (sku, quantity) in &lines {
                    let available = available!(conn, count, sku);
                    if available < *quantity {
                        return Ok::<_, anyhow::Error>(Reserved::SoldOut {
                            sku: sku.clone(),
                            available: available.max(0),
                        });
                    }
                }
                for (sku, quantity) in &lines {
                    diesel::insert_into(reservations::table)
                        .values((
                            reservations::id.eq(id),
                            reservations::sku.eq(sku),
                            reservations::quantity.eq(quantity),
                            reservations::state.eq(HELD),
                            reservations::expires_at.eq(expires_at),
                            reservations::created_at.eq(now),
                        ))
                        .execute(conn)
                        .await?;
                }
                Ok(Reserved::Held)
            })
            .await
            .context("could not reserve stock")
        })
    }

    /// Names the session Stripe created for hold `id`, and how long Stripe keeps it open
    /// (`expires_at`, ms), so that recording the session settles it. False if the hold
    /// is no longer held.
    pub async fn attach_reservation(
        &self,
        id: &str,
        session_id: &str,
        expires_at: i64,
    ) -> anyhow::Result<bool> {
        let attached = with_connection!(self, |conn| {
            diesel::update(
                reservations::table
                    .filter(reservations::id.eq(id))
                    .filter(held()),
            )
            .set((
                reservations::session_id.eq(session_id),
                reservations::expires_at.eq(expires_at),
            ))
            .execute(conn)
            .await
            .context("could not store the reservation's session")
        })?;
        Ok(attached > 0)
    }

    /// Leaves hold `id` out of the sweep until `until` (ms): Stripe could not settle it.
    pub async fn put_off_reservation(&self, id: &str, until: i64) -> anyhow::Result<()> {
        with_connection!(self, |conn| {
            diesel::update(reservations::table.filter(reservations::id.eq(id)))
                .set(reservations::next_check_at.eq(until))
                .execute(conn)
                .await
                .context("could not put off the reservation")
        })?;
        Ok(())
    }

    /// Releases hold `id` if it is still held: the session was never created, or never
    /// will be paid.
    pub async fn release_reservation(&self, id: &str) -> anyhow::Result<bool> {
        self.release(id, false).await
    }

    /// Releases hold `id` if it is still held and still has no session: the sweep's
    /// release, which must lose to a session stored meanwhile.
    pub async fn release_unattached(&self, id: &str) -> anyhow::Result<bool> {
        self.release(id, true).await
    }

    async fn release(&self, id: &str, only_unattached: bool) -> anyhow::Result<bool> {
        let now = now_ms();
        let released = with_connection!(self, |conn| {
            diesel::update(
                reservations::table
                    .filter(reservations::id.eq(id))
                    .filter(held())
                    .filter(
                        reservations::session_id
                            .is_null()
                            .or((!only_unattached).into_sql::<Bool>()),
                    ),
            )
            .set((
                reservations::state.eq(RELEASED),
                reservations::settled_at.eq(now),
            ))
            .execute(conn)
            .await
            .context("could not release the reservation")
        })?;
        Ok(released > 0)
    }

    /// Settles session `session_id`'s holds as its recorded `status` says (see
    /// [`settled_state`]); true if any was still held.
    pub async fn settle_reservations(
        &self,
        session_id: &str,
        status: Status,
    ) -> anyhow::Result<bool> {
        let Some(state) = settled_state(status) else {
            return Ok(false);
        };
        let now = now_ms();
        let settled = with_connection!(self, |conn| {
            diesel::update(
                reservations::table
                    .filter(reservations::session_id.eq(session_id))
                    .filter(held()),
            )
            .set((
                reservations::state.eq(state),
                reservations::settled_at.eq(now),
            ))
            .execute(conn)
            .await
            .context("could not settle the reservation")
        })?;
        Ok(settled > 0)
    }

    /// Holds the sweep should look at, at `now` (ms), oldest first, one entry per hold
    /// however many SKUs it covers: those whose session expired before `expired_before`,
    /// and those that never got a session though made before `unattached_before`. Not
    /// those put off until later, nor those of sessions awaiting a delayed payment.
    pub async fn due_reservations(
        &self,
        now: i64,
        expired_before: i64,
        unattached_before: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<DueReservation>> {
        let rows = with_connection!(self, |conn| {
            reservations::table
                .filter(held())
                .filter(
                    reservations::expires_at
                        .lt(expired_before)
                        .or(reservations::session_id
                            .is_null()
                            .and(reservations::created_at.lt(unattached_before))),
                )
                .filter(
                    reservations::next_check_at
                        .is_null()
                        .or(reservations::next_check_at.le(now)),
                )
                // A session waiting for a delayed payment keeps its hold until the
                // payment's own event settles it, and costs no Stripe call meanwhile.
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    checkout_sessions::table
                        .filter(
                            checkout_sessions::id
                                .nullable()
                                .eq(reservations::session_id),
                        )
                        .filter(checkout_sessions::status.eq(Status::AwaitingPayment)),
                )))
                .select((
                    reservations::id,
                    reservations::session_id,
                    reservations::expires_at,
                ))
                .distinct()
                .order((reservations::expires_at, reservations::id))
                .limit(limit)
                .load::<(String, Option<String>, i64)>(conn)
                .await
                .context("could not read the reservations due")
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, session_id, _)| DueReservation { id, session_id })
            .collect())
    }

    /// Forgets holds settled before `before` (ms); returns how many.
    pub async fn prune_reservations(&self, before: i64) -> anyhow::Result<usize> {
        with_connection!(self, |conn| {
            diesel::delete(reservations::table.filter(reservations::settled_at.lt(before)))
                .execute(conn)
                .await
                .context("could not prune settled reservations")
        })
    }

    /// Units of `sku` a new session may still take.
    pub async fn available(&self, sku: &str) -> anyhow::Result<i64> {
        let (_, count) = self.available_statements();
        with_connection!(self, |conn| {
            let available = async { Ok::<_, anyhow::Error>(available!(conn, count, sku)) };
            available
                .await
                .context("could not count the stock available")
        })
    }

    /// The statements that lock a SKU's stock row (PostgreSQL only) and count it.
    fn available_statements(&self) -> (Option<&'static str>, &'static str) {
        match self {
            Self::Postgres(_) => (Some(LOCK_POSTGRES), AVAILABLE_POSTGRES),
            Self::Sqlite(_) => (None, AVAILABLE_SQLITE),
        }
    }

    /// The units of `sku` held now.
    pub async fn held(&self, sku: &str) -> anyhow::Result<i64> {
        let held: Vec<i64> = with_connection!(self, |conn| {
            reservations::table
                .filter(reservations::sku.eq(sku))
                .filter(held())
                .select(reservations::quantity)
                .load(conn)
                .await
                .context("could not count the stock held")
        })?;
        Ok(held.iter().sum())
    }
}
