//! Reads Checkout Sessions and their line items from Stripe's API through async-stripe.
//!
//! Every call is paced (see [`super::pacer`]), retried on 429, 5xx and network faults with
//! exponential backoff and jitter (these are GETs, safe to repeat), and bounded in time.
//! A 404 with `resource_missing` means Stripe does not know the session: an answer, not a
//! fault. Any other 404 (a proxy, a mistyped `STRIPE_API_BASE`) is a fault.

use std::future::Future;
use std::time::{Duration, Instant};

use stripe::StripeError;
use stripe_checkout::checkout_session::{ListLineItemsCheckoutSession, RetrieveCheckoutSession};
use stripe_checkout::{CheckoutSession, CheckoutSessionPaymentStatus, CheckoutSessionStatus};
use stripe_client_core::{CustomizableStripeRequest, StripeRequest};
use stripe_shared::{ApiErrorsCode, CheckoutSessionItem};

use super::client::PooledClient;
use super::pacer::{Pacer, Priority};
use crate::configuration::Secret;
use crate::domain::{
    AccountId, LineItem, PaymentStatus, SessionId, SessionState, SessionSummary, ShippingAddress,
};
use crate::retry::backoff;

/// Line items per page, Stripe's maximum.
const PAGE_SIZE: i64 = 100;
/// Attempts per call before Stripe is reported unavailable.
const MAX_ATTEMPTS: u32 = 5;
/// Time allowed for one HTTP attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// What a caller learnt of a session is asked again before a call this long after: by
/// then another replica may have taken over (see `replicas::ALIVE_FOR`).
pub const STALE_AFTER: Duration = Duration::from_secs(1);

/// Why Stripe could not tell us about a session.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    #[error("Stripe does not know this Checkout Session")]
    UnknownSession,
    #[error("Stripe's API is unavailable: {0}")]
    Unavailable(String),
    /// Stripe's own answer that the request cannot succeed as it is (a 4xx other than 409
    /// and 429): sending it again changes nothing.
    #[error("Stripe refused: {0}")]
    Refused(String),
}

/// The engine's way to Stripe's API.
#[derive(Clone)]
pub struct StripeGateway {
    pub(super) client: PooledClient,
    pacer: Pacer,
}

impl StripeGateway {
    /// A gateway to the API at `api_base` (Stripe's, the simulator's or a test double's).
    pub fn new(secret: &Secret, api_base: &str, pacer: Pacer) -> anyhow::Result<Self> {
        let client = PooledClient::new(secret.expose(), api_base, ATTEMPT_TIMEOUT)?;
        Ok(Self { client, pacer })
    }

    /// The pacer every call of this gateway waits for.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// The session and all its line items: one call for carts whose items fit in the
    /// embedded first page, one more per further page of 100. A connected account's
    /// session is asked for on that account.
    #[tracing::instrument(skip_all, fields(session.id = %id))]
    pub async fn checkout_session(
        &self,
        id: &SessionId,
        account: Option<&AccountId>,
        priority: &Priority,
    ) -> Result<(SessionSummary, Vec<LineItem>), GatewayError> {
        let request = RetrieveCheckoutSession::new(id.as_str()).expand(["line_items".to_owned()]);
        let mut session = self
            .call(priority, || {
                on_account(request.customize(), account).send(&self.client)
            })
            .await?;
        // A session without an embedded list (an older API version, a double) is listed
        // from the start.
        let (mut items, has_more) = match session.line_items.take() {
            Some(list) => (
                list.data.into_iter().map(to_line_item).collect::<Vec<_>>(),
                list.has_more,
            ),
            None => (Vec::new(), true),
        };
        if has_more {
            let last = items.last().map(|item| item.id.clone());
            items.extend(self.list_line_items(id, account, last, priority).await?);
        }
        let mut summary = to_summary(id, session);
        summary.account = account.cloned();
        Ok((summary, items))
    }

    /// All line items of a session, 100 per call.
    #[tracing::instrument(skip_all, fields(session.id = %id))]
    pub async fn line_items(
        &self,
        id: &SessionId,
        account: Option<&AccountId>,
        priority: &Priority,
    ) -> Result<Vec<LineItem>, GatewayError> {
        self.list_line_items(id, account, None, priority).await
    }

    /// All line items of a session, for a caller that learnt at `known_at` that it needs
    /// them: if that was more than [`STALE_AFTER`] ago once the pacer lets the call
    /// through (a long wait behind the backlog, or a process frozen meanwhile), `needed`
    /// is asked first, and `Ok(None)` is the answer when the items are needed no more
    /// (another replica recorded the session meanwhile).
    #[tracing::instrument(skip_all, fields(session.id = %id))]
    pub async fn line_items_if_needed(
        &self,
        id: &SessionId,
        account: Option<&AccountId>,
        priority: &Priority,
        known_at: Instant,
        needed: impl AsyncFnOnce() -> bool,
    ) -> Result<Option<Vec<LineItem>>, GatewayError> {
        self.pacer.acquire(priority).await;
        if known_at.elapsed() > STALE_AFTER && !needed().await {
            return Ok(None);
        }
        let request = ListLineItemsCheckoutSession::new(id.as_str()).limit(PAGE_SIZE);
        let page = self
            .call_paced(priority, MAX_ATTEMPTS, true, || {
                on_account(request.customize(), account).send(&self.client)
            })
            .await?;
        let mut items: Vec<LineItem> = page.data.into_iter().map(to_line_item).collect();
        if page.has_more
            && let Some(last) = items.last().map(|item| item.id.clone())
        {
            items.extend(
                self.list_line_items(id, account, Some(last), priority)
                    .await?,
            );
        }
        Ok(Some(items))
    }

    async fn list_line_items(
        &self,
        id: &SessionId,
        account: Option<&AccountId>,
        mut starting_after: Option<String>,
        priority: &Priority,
    ) -> Result<Vec<LineItem>, GatewayError> {
        let mut items = Vec::new();
        loop {
            let mut request = ListLineItemsCheckoutSession::new(id.as_str()).limit(PAGE_SIZE);
            if let Some(after) = &starting_after {
                request = request.starting_after(after.clone());
            }
            let page = self
                .call(priority, || {
                    on_account(request.customize(), account).send(&self.client)
                })
                .await?;
            let has_more = page.has_more;
            items.extend(page.data.into_iter().map(to_line_item));
            starting_after = items.last().map(|item| item.id.clone());
            if !has_more || starting_after.is_none() {
                return Ok(items);
            }
        }
    }

    pub(super) async fn call<T, F, Fut>(
        &self,
        priority: &Priority,
        send: F,
    ) -> Result<T, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StripeError>>,
    {
        self.call_with(priority, MAX_ATTEMPTS, send).await
    }

    /// Like [`Self::call`], with at most `max_attempts` attempts (1 for a request that is
    /// not safe to repeat).
    pub(super) async fn call_with<T, F, Fut>(
        &self,
        priority: &Priority,
        max_attempts: u32,
        send: F,
    ) -> Result<T, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StripeError>>,
    {
        self.call_paced(priority, max_attempts, false, send).await
    }

    /// Like [`Self::call_with`]; `acquired` when the caller has already waited for the
    /// pacer for the first attempt.
    async fn call_paced<T, F, Fut>(
        &self,
        priority: &Priority,
        max_attempts: u32,
        mut acquired: bool,
        mut send: F,
    ) -> Result<T, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StripeError>>,
    {
        let mut attempt = 1;
        loop {
            if !std::mem::take(&mut acquired) {
                self.pacer.acquire(priority).await;
            }
            let error = match send().await {
                Ok(value) => return Ok(value),
                // Only Stripe's own word that the object does not exist: a 404 from a proxy
                // or a mistyped STRIPE_API_BASE is a fault, to be retried.
                Err(StripeError::Stripe(error, 404))
                    if error.code == Some(ApiErrorsCode::ResourceMissing) =>
                {
                    return Err(GatewayError::UnknownSession);
                }
                Err(error) => error,
            };
            let description = describe(&error);
            if !is_transient(&error) || attempt >= max_attempts {
                tracing::warn!(attempts = attempt, error = %description, "Stripe call failed");
                // Refused only by Stripe's own lasting no: a 409 or 429 that outlasted the
                // retries may still pass.
                return Err(match error {
                    StripeError::Stripe(_, status)
                        if (400..500).contains(&status) && !is_transient(&error) =>
                    {
                        GatewayError::Refused(description)
                    }
                    _ => GatewayError::Unavailable(description),
                });
            }
            let delay = backoff(BACKOFF_BASE, BACKOFF_CAP, attempt);
            tracing::info!(
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %description,
                "Stripe call failed, retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Sends `request` as the connected account, when there is one (`Stripe-Account`).
pub(super) fn on_account<T>(
    request: CustomizableStripeRequest<T>,
    account: Option<&AccountId>,
) -> CustomizableStripeRequest<T> {
    match account {
        Some(account) => request.account_id(account.as_str().into()),
        None => request,
    }
}

fn is_transient(error: &StripeError) -> bool {
    match error {
        StripeError::Stripe(_, status) => *status == 429 || *status == 409 || *status >= 500,
        // A proxy's HTML error page or a cut-off body: worth another try.
        StripeError::JSONDeserialize(_) | StripeError::ClientError(_) | StripeError::Timeout => {
            true
        }
        StripeError::ConfigError(_) => false,
    }
}

/// What a failed call says, for logs and operators: Stripe's status and message, with
/// any email address in the message (Stripe quotes the one it refuses) left out.
fn describe(error: &StripeError) -> String {
    match error {
        StripeError::Stripe(details, status) => format!(
            "status {status}: {}",
            without_emails(details.message.as_deref().unwrap_or("no message"))
        ),
        other => other.to_string(),
    }
}

/// `message` with every word that holds an `@` replaced: Stripe quotes the address it
/// refuses, and these messages reach the logs and the callers.
fn without_emails(message: &str) -> String {
    message
        .split(' ')
        .map(|word| if word.contains('@') { "[email]" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

fn to_summary(id: &SessionId, session: CheckoutSession) -> SessionSummary {
    let payment_status = match session.payment_status {
        CheckoutSessionPaymentStatus::Paid => PaymentStatus::Paid,
        CheckoutSessionPaymentStatus::NoPaymentRequired => PaymentStatus::NoPaymentRequired,
        // Unpaid, or a status newer than this build: never fulfil on a guess.
        _ => PaymentStatus::Unpaid,
    };
    let state = match session.status {
        Some(CheckoutSessionStatus::Complete) => SessionState::Complete,
        Some(CheckoutSessionStatus::Expired) => SessionState::Expired,
        _ => SessionState::Open,
    };
    SessionSummary {
        id: id.clone(),
        account: None,
        livemode: session.livemode,
        state,
        payment_status,
        currency: session.currency.map(|c| c.to_string()),
        amount_total: session.amount_total,
        customer_email: session.customer_details.and_then(|d| d.email),
        payment_intent: session
            .payment_intent
            .as_ref()
            .map(|pi| pi.id().to_string()),
        shipping_address: session
            .collected_information
            .and_then(|c| c.shipping_details)
            .map(|details| {
                Box::new(ShippingAddress {
                    name: details.name,
                    line1: details.address.line1,
                    line2: details.address.line2,
                    city: details.address.city,
                    state: details.address.state,
                    postal_code: details.address.postal_code,
                    country: details.address.country,
                })
            }),
        created: Some(session.created),
    }
}

fn to_line_item(item: CheckoutSessionItem) -> LineItem {
    let price = item.price.as_ref();
    LineItem {
        id: item.id.to_string(),
        price_id: price.map(|p| p.id.to_string()),
        product_id: price.map(|p| p.product.id().to_string()),
        description: item.description.unwrap_or_default(),
        quantity: item
            .quantity
            .map_or(1, |q| i64::try_from(q).unwrap_or(i64::MAX)),
        currency: item.currency.to_string(),
        unit_amount: price.and_then(|p| p.unit_amount),
        amount_subtotal: item.amount_subtotal,
        amount_total: item.amount_total,
    }
}

#[cfg(test)]
mod tests {
    use super::without_emails;

    #[test]
    fn a_stripe_message_loses_the_addresses_it_quotes() {
        assert_eq!(
            without_emails("Invalid email address: 'jenny.rosen@localhost'"),
            "Invalid email address: [email]"
        );
        assert_eq!(
            without_emails("No such price: 'price_1'"),
            "No such price: 'price_1'"
        );
    }
}
