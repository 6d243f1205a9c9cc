//! Opening a Checkout Session for a cart, as the storefront does: the catalog's checks,
//! then the physical goods held, then the session created at Stripe to expire when the
//! hold does.
//!
//! The hold is written before Stripe is asked, so a sold-out cart costs no Stripe call.
//! If Stripe refuses or cannot be reached, the hold is released at once; if this process
//! dies in between, the hold runs out with the session it was for (see
//! [`crate::reservations`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::catalog::{Catalog, Kind, Product};
use crate::db::reservations::Reserved;
use crate::db::{Database, millis};
use crate::stripe::listing::{CreatedCheckout, NewCheckout};
use crate::stripe::{GatewayError, StripeGateway};

/// The most of one product a single checkout buys, whatever its lines.
pub const MAX_QUANTITY: u64 = 20;
/// Stripe takes an `expires_at` from 30 minutes to 24 hours after it creates the session,
/// by its own clock; minutes inside each bound leave room for the pacer's wait, a retry
/// and clock skew.
const EARLIEST_EXPIRY: Duration = Duration::from_secs(33 * 60);
const LATEST_EXPIRY: Duration = Duration::from_secs(24 * 3600 - 60);
/// The most lines one checkout has.
pub const MAX_LINES: usize = 20;

/// A cart: (Stripe Price id, quantity) lines.
#[derive(Debug, Clone)]
pub struct Cart {
    pub lines: Vec<(String, u64)>,
    /// The customer's address, filled in on the payment page.
    pub email: Option<String>,
}

/// Why no session was opened. Nothing is held after any of them.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("line {0}: the price {1:?} is not in the shop")]
    UnknownPrice(usize, String),
    #[error(
        "line {0}: the quantity must be from 1 to {MAX_QUANTITY}, all lines of a product together"
    )]
    Quantity(usize),
    #[error("a checkout has 1 to {MAX_LINES} lines")]
    Lines,
    /// `name` (the cart's `price`) has `available` units left, fewer than the cart asks
    /// for.
    #[error("{name} is sold out: {available} left")]
    SoldOut {
        name: String,
        price: String,
        available: i64,
    },
    #[error("Stripe could not create the session: {0}")]
    Stripe(GatewayError),
    #[error(transparent)]
    Database(anyhow::Error),
}

/// What opening a checkout needs.
pub struct Opener<'a> {
    pub db: &'a Database,
    pub stripe: &'a StripeGateway,
    pub catalog: &'a Catalog,
    pub public_url: &'a str,
    /// How long the session stays open and its goods held.
    pub hold: Duration,
}

/// The `expires_at` (seconds) to ask Stripe for, `hold` after `now` (ms), within what
/// Stripe takes.
fn stripe_expiry(hold: Duration, now: i64) -> i64 {
    (now + millis(hold.clamp(EARLIEST_EXPIRY, LATEST_EXPIRY))) / 1000
}

/// A cart the catalog accepts: what [`Opener::check`] makes and [`Opener::open`] takes.
#[derive(Debug)]
pub struct Checked {
    lines: Vec<(String, u64)>,
    /// Units of each physical SKU, to be held.
    physical: BTreeMap<String, i64>,
    email: Option<String>,
}

impl Checked {
    /// Whether the customer's address was given.
    pub fn has_email(&self) -> bool {
        self.email.is_some()
    }
}

impl Opener<'_> {
    /// Checks `cart` against the catalog; costs nothing, changes nothing.
    pub fn check(&self, cart: Cart) -> Result<Checked, OpenError> {
        if cart.lines.is_empty() || cart.lines.len() > MAX_LINES {
            return Err(OpenError::Lines);
        }
        let mut physical: BTreeMap<String, i64> = BTreeMap::new();
        for (index, (price, quantity)) in cart.lines.iter().enumerate() {
            let product = self
                .catalog
                .by_price(price)
                .ok_or_else(|| OpenError::UnknownPrice(index, price.clone()))?;
            if !(1..=MAX_QUANTITY).contains(quantity) {
                return Err(OpenError::Quantity(index));
            }
            if product.kind == Kind::Physical {
                // At most 20 lines of at most 20: no overflow.
                let units = physical.entry(product.sku.clone()).or_default();
                *units += *quantity as i64;
                // Repeating a line buys no more than one line may.
                if *units > MAX_QUANTITY as i64 {
                    return Err(OpenError::Quantity(index));
                }
            }
        }
        Ok(Checked {
            lines: cart.lines,
            physical,
            email: cart.email,
        })
    }

    /// Holds a checked cart's physical goods and creates its session: for Stripe's
    /// embedded form when `embedded`, otherwise for its hosted page.
    pub async fn open(&self, cart: Checked, embedded: bool) -> Result<CreatedCheckout, OpenError> {
        let Checked {
            lines,
            physical,
            email,
        } = cart;
        let collect_shipping = !physical.is_empty();
        let held_until = crate::db::now_ms() + millis(self.hold);
        let reservation = match physical.is_empty() {
            true => None,
            false => {
                let id = format!("res_{:032x}", fastrand::u128(..));
                let held: Vec<_> = physical.into_iter().collect();
                match self
                    .db
                    .reserve(&id, &held, held_until)
                    .await
                    .map_err(OpenError::Database)?
                {
                    Reserved::Held => Some(id),
                    Reserved::SoldOut { sku, available } => {
                        let price = lines
                            .iter()
                            .map(|(price, _)| price)
                            .find(|price| {
                                self.catalog.by_price(price).map(|p| p.sku.as_str())
                                    == Some(sku.as_str())
                            })
                            .cloned()
                            .unwrap_or_default();
                        return Err(OpenError::SoldOut {
                            name: self
                                .catalog
                                .by_sku(&sku)
                                .map_or_else(|| sku.clone(), Product::display_name),
                            price,
                            available,
                        });
                    }
                }
            }
        };
        let new = NewCheckout {
            items: lines,
            collect_shipping,
            success_url: format!(
                "{}/after-checkout?session_id={{CHECKOUT_SESSION_ID}}",
                self.public_url
            ),
            cancel_url: format!("{}/", self.public_url),
            expires_at: Some(stripe_expiry(self.hold, crate::db::now_ms())),
            reservation: reservation.clone(),
            customer_email: email,
            embedded,
        };
        let created = self.stripe.create_checkout_session(&new).await;
        let Some(reservation) = reservation else {
            return created.map_err(OpenError::Stripe);
        };
        match created {
            // The hold lasts as long as Stripe keeps the session open.
            Ok(created) => match self
                .db
                .attach_reservation(&reservation, &created.id, created.expires_at * 1000)
                .await
            {
                Ok(true) => Ok(created),
                Ok(false) => Err(OpenError::Database(anyhow::anyhow!(
                    "the hold was released before its session was stored"
                ))),
                Err(error) => Err(OpenError::Database(error)),
            },
            Err(error) => {
                // No session: nobody can pay for these goods. A release that fails now
                // is the sweep's to make.
                if let Err(failed) = self.db.release_reservation(&reservation).await {
                    tracing::warn!(error = %format!("{failed:#}"), "could not release a hold at once");
                }
                Err(OpenError::Stripe(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_asked_of_stripe_stays_inside_what_stripe_takes() {
        let now = 1_700_000_000_000;
        let minutes = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(stripe_expiry(minutes(30), now), now / 1000 + 33 * 60);
        assert_eq!(stripe_expiry(minutes(90), now), now / 1000 + 90 * 60);
        assert_eq!(
            stripe_expiry(minutes(1440), now),
            now / 1000 + 24 * 3600 - 60
        );
    }
}
