//! Reconcile: ask Stripe what happened lately and fulfil whatever no webhook told us.
//!
//! Two sources, so that nothing slips through: the Events list (the four Checkout events
//! and the refund events, undelivered ones only where the key allows) and the list of
//! complete Checkout Sessions. Events go through the inbox like deliveries; sessions go through their
//! actors like the CLI's `fulfill`. Anything already recorded is left alone, so a second
//! run does nothing.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::actors::Sessions;
use crate::db::Database;
use crate::db::inbox::Stored;
use crate::domain::{AccountId, SessionId, Status};
use crate::fulfillment::{Source, Trigger};
use crate::inbox;
use crate::stripe::event;
use crate::stripe::listing::{Created, EventsQuery, SessionsQuery};
use crate::stripe::{GatewayError, StripeGateway};

/// The events fulfilld acts on.
pub const CHECKOUT_EVENTS: [&str; 11] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "charge.dispute.funds_reinstated",
];
/// How far back Stripe keeps events.
pub const STRIPE_KEEPS_EVENTS: Duration = Duration::from_secs(30 * 86_400);
/// What `serve`'s scheduled runs cover.
pub const SCHEDULED_WINDOW: Duration = Duration::from_secs(3 * 86_400);
const PAGE: u32 = 100;

/// What a run found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub events_seen: usize,
    /// Events no webhook had delivered, now carried out.
    pub events_processed: usize,
    pub sessions_seen: usize,
    /// Complete sessions with no final record, now looked at again, with their status.
    pub sessions_recorded: Vec<(String, Status)>,
    /// Sessions or events that could not be carried out now, and why.
    pub failures: Vec<(String, String)>,
}

/// Reconciles the window of `since` before now, on the platform and then on every
/// connected account: those fulfilld has seen a session or event of in the last 30 days
/// (or `since`, if longer), and `accounts`. `progress` hears of every item looked at. A
/// connected account Stripe will not list is a failure in the report, and the others go
/// on; the platform's listing failing fails the run.
pub async fn run(
    sessions: &Sessions,
    db: &Database,
    stripe: &StripeGateway,
    since: Duration,
    accounts: &[AccountId],
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Report> {
    let since_ts = crate::db::now_ms() / 1000 - i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let mut report = Report::default();
    events(sessions, db, stripe, since_ts, None, progress, &mut report).await?;
    complete_sessions(sessions, db, stripe, since_ts, None, progress, &mut report).await?;
    // The accounts active in the time Stripe keeps events, and those named: an account
    // long quiet costs no calls on every run.
    let active_since = crate::db::now_ms() - crate::db::millis(STRIPE_KEEPS_EVENTS.max(since));
    let mut connected: Vec<AccountId> = db
        .connected_accounts(active_since)
        .await?
        .iter()
        .filter_map(|raw| AccountId::parse(raw).ok())
        .collect();
    connected.extend(accounts.iter().cloned());
    connected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    connected.dedup();
    for account in &connected {
        let on = Some(account);
        // What a pass found before it failed stands, in the same report.
        let listed = async {
            events(sessions, db, stripe, since_ts, on, progress, &mut report).await?;
            complete_sessions(sessions, db, stripe, since_ts, on, progress, &mut report).await
        };
        if let Err(error) = listed.await {
            report
                .failures
                .push((account.to_string(), format!("{error:#}")));
        }
    }
    Ok(report)
}

async fn events(
    sessions: &Sessions,
    db: &Database,
    stripe: &StripeGateway,
    since_ts: i64,
    account: Option<&AccountId>,
    progress: &(dyn Fn(&str) + Sync),
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut query = EventsQuery {
        types: &CHECKOUT_EVENTS,
        created: Created { gte: since_ts },
        delivery_success: Some(false),
        limit: PAGE,
        starting_after: None,
    };
    loop {
        let page = match stripe.list_page("/events", &query, account).await {
            Ok(page) => page,
            // Some keys may not filter on delivery; then every event is looked at.
            Err(GatewayError::Unavailable(_)) if query.delivery_success.is_some() => {
                query.delivery_success = None;
                continue;
            }
            Err(error) => return Err(anyhow::anyhow!("could not list Stripe events: {error}")),
        };
        for object in &page.data {
            report.events_seen += 1;
            // Listed on a connected account: stored and carried out on it, as its webhook
            // would be. One that names another account is not taken on this one's word.
            let mut object = object.clone();
            if let Some(account) = account {
                let Some(fields) = object.as_object_mut() else {
                    continue;
                };
                match fields.get("account").and_then(serde_json::Value::as_str) {
                    None => {
                        fields.insert("account".into(), account.as_str().into());
                    }
                    Some(named) if named == account.as_str() => {}
                    Some(named) => {
                        let id = fields.get("id").and_then(|id| id.as_str()).unwrap_or("?");
                        report.failures.push((
                            id.to_owned(),
                            format!("listed on {account} but naming {named}; left alone"),
                        ));
                        continue;
                    }
                }
            }
            let body = object.to_string();
            let Ok(parsed) = event::parse(body.as_bytes()) else {
                continue;
            };
            // Stored as the webhook stores it.
            let Some(stored) = inbox::to_store(&parsed, body) else {
                continue;
            };
            let id = stored.id.clone();
            progress(&id);
            let fresh = db.store_events(std::slice::from_ref(&stored)).await?;
            if fresh.first() == Some(&Stored::Duplicate { processed: true }) {
                continue;
            }
            match inbox::Job::of(parsed) {
                Some(inbox::Job::Checkout {
                    session_id,
                    trigger,
                }) => {
                    inbox::process(sessions, db, &id, &session_id, trigger).await;
                }
                Some(inbox::Job::Refund { news, account }) => {
                    inbox::reverse(sessions, db, &id, &news, account).await;
                }
                None => continue,
            }
            match db.event(&id).await?.and_then(|event| event.processed_at) {
                Some(_) => report.events_processed += 1,
                None => report
                    .failures
                    .push((id, "not processed yet; replayed later".into())),
            }
        }
        query.starting_after = page.next_cursor();
        if query.starting_after.is_none() {
            return Ok(());
        }
    }
}

async fn complete_sessions(
    sessions: &Sessions,
    db: &Database,
    stripe: &StripeGateway,
    since_ts: i64,
    account: Option<&AccountId>,
    progress: &(dyn Fn(&str) + Sync),
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut query = SessionsQuery {
        status: "complete",
        created: Created { gte: since_ts },
        limit: PAGE,
        starting_after: None,
    };
    loop {
        let page = stripe
            .list_page("/checkout/sessions", &query, account)
            .await
            .map_err(|error| anyhow::anyhow!("could not list Checkout Sessions: {error}"))?;
        for object in &page.data {
            report.sessions_seen += 1;
            let Some(id) = object["id"]
                .as_str()
                .and_then(|raw| SessionId::parse(raw).ok())
            else {
                continue;
            };
            progress(id.as_str());
            let settled = db
                .outcome(&id)
                .await?
                .is_some_and(|outcome| outcome.status.is_terminal());
            if settled {
                continue;
            }
            match sessions
                .handle(&id, Trigger::Fulfill(Source::Operator(account.cloned())))
                .await
            {
                Ok(outcome) => report
                    .sessions_recorded
                    .push((id.to_string(), outcome.status)),
                Err(error) => report.failures.push((id.to_string(), error.to_string())),
            }
        }
        query.starting_after = page.next_cursor();
        if query.starting_after.is_none() {
            return Ok(());
        }
    }
}

/// Runs reconcile over [`SCHEDULED_WINDOW`] (on the platform, the connected accounts seen
/// and `accounts`) every `every`, logging results, while this
/// replica leads (`leading`); the first run starts as soon as it does. A run is cut short
/// if leadership is lost meanwhile, so runs do not overlap across replicas; what it did
/// so far stands, and the next leader's run does the rest.
pub fn spawn_schedule(
    sessions: Sessions,
    db: Database,
    stripe: StripeGateway,
    every: Duration,
    accounts: Vec<AccountId>,
    mut leading: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut last_run: Option<Instant> = None;
        loop {
            if leading.wait_for(|leads| *leads).await.is_err() {
                return;
            }
            // Leadership that comes back soon after a run does not start another.
            let due_in = last_run.map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed()));
            if !due_in.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(due_in) => {}
                    _ = leading.wait_for(|leads| !*leads) => continue,
                }
            }
            last_run = Some(Instant::now());
            let run = run(
                &sessions,
                &db,
                &stripe,
                SCHEDULED_WINDOW,
                &accounts,
                &|_| {},
            );
            let lost = leading.wait_for(|leads| !*leads);
            let report = tokio::select! {
                report = run => report,
                _ = lost => {
                    tracing::warn!("reconcile stopped: this replica no longer leads");
                    continue;
                }
            };
            if let Ok(report) = &report {
                for (item, error) in &report.failures {
                    tracing::warn!(item = %item, error = %error, "reconcile could not carry out an item or list an account");
                }
            }
            match report {
                Ok(report) if report.events_processed + report.sessions_recorded.len() > 0 => {
                    tracing::warn!(
                        events = report.events_processed,
                        sessions = report.sessions_recorded.len(),
                        "reconcile found work no webhook had delivered"
                    );
                }
                Ok(_) => tracing::debug!("reconcile found nothing to do"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "reconcile failed; next run will retry")
                }
            }
        }
    });
}
