//! The operator's commands: `reconcile`, `events replay`, `sessions show`, `sessions refund`.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{EventsCommand, SessionsCommand};
use crate::configuration::Settings;
use crate::db::Database;
use crate::db::inbox::EventView;
use crate::domain::{GrantStatus, SessionId, format_amount};
use crate::fulfillment::Trigger;
use crate::inbox;
use crate::reconcile::{self, STRIPE_KEEPS_EVENTS};
use crate::refunding::{self, RefundAsk, RefundError, Refunded};
use crate::startup::Core;
use crate::stripe::event::{self, Event};

use super::with_core;

/// `fulfilld reconcile --since <DURATION>`.
pub async fn reconcile(settings: &Settings, since: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        !since.is_zero(),
        "--since: expected a duration above 0, like 72h"
    );
    if since > STRIPE_KEEPS_EVENTS {
        eprintln!(
            "warning: Stripe keeps events for 30 days; events older than that cannot be \
             found, though complete sessions still are"
        );
    }
    let config = settings.validate()?;
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} looked at, now {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let progress = |id: &str| {
        spinner.inc(1);
        spinner.set_message(id.to_owned());
    };
    let accounts = &config.stripe.accounts;
    let report = with_core(&config, async |core| {
        reconcile::run(
            &core.sessions,
            &core.db,
            &core.stripe,
            since,
            accounts,
            &progress,
        )
        .await
    })
    .await;
    spinner.finish_and_clear();
    let report = report?;
    println!(
        "looked at {} Checkout events and {} complete sessions from the last {}",
        report.events_seen,
        report.sessions_seen,
        humanize(since)
    );
    println!(
        "carried out {} events no webhook had delivered",
        report.events_processed
    );
    for (id, status) in &report.sessions_recorded {
        println!("{id}: {}", status.as_str());
    }
    if report.events_processed == 0 && report.sessions_recorded.is_empty() {
        println!("nothing to do: everything was already recorded");
    }
    for (id, why) in &report.failures {
        eprintln!("{id}: {why}");
    }
    if !report.failures.is_empty() {
        anyhow::bail!(
            "{} items could not be carried out now",
            report.failures.len()
        );
    }
    Ok(())
}

fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

/// `fulfilld events list` and `fulfilld events replay <EVENT_ID>`.
pub async fn events(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    let event_id = match command {
        EventsCommand::List { dead, limit } => {
            let db = Database::connect(&settings.database_url()?).await?;
            println!(
                "{:<32}  {:<44}  {:<40}  {:<9}  {:>8}  LAST ERROR",
                "EVENT", "TYPE", "SESSION", "STATE", "ATTEMPTS"
            );
            for event in db.list_events(dead, limit.max(1)).await? {
                print_event(&event);
            }
            return Ok(());
        }
        EventsCommand::Replay { event_id } => event_id,
    };
    let config = settings.validate()?;
    with_core(&config, async |core| replay(core, &event_id).await).await
}

/// `fulfilld events replay <EVENT_ID>`, on the engine.
async fn replay(core: &Core, event_id: &str) -> anyhow::Result<()> {
    if core.db.revive_event(event_id).await? {
        println!("{event_id} was dead; trying it again");
    }
    let stored = core.db.event(event_id).await?.with_context(|| {
        format!("no stored event {event_id}: only events delivered to this fulfilld are stored (try `fulfilld reconcile`)")
    })?;
    let Ok(Event::Checkout { kind, summary, .. }) = event::parse(stored.payload.as_bytes()) else {
        anyhow::bail!("stored event {event_id} is not a Checkout event");
    };
    let id = summary.id.clone();
    inbox::process(
        &core.sessions,
        &core.db,
        event_id,
        &id,
        Trigger::from_event(kind, summary),
    )
    .await;
    let outcome = core
        .db
        .outcome(&id)
        .await?
        .with_context(|| format!("{event_id} was not carried out; see the log"))?;
    println!(
        "{event_id} ({}): {id} is {}",
        stored.event_type,
        outcome.status.as_str()
    );
    Ok(())
}

/// `fulfilld sessions show|refund`.
pub async fn sessions(settings: &Settings, command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::Show { session_id } => show(settings, &session_id).await,
        SessionsCommand::Refund {
            session_id,
            amount,
            items,
        } => refund(settings, &session_id, amount, items.as_deref()).await,
    }
}

/// `fulfilld sessions refund <SESSION_ID> [--amount N] [--items SKU:QTY,…]`.
async fn refund(
    settings: &Settings,
    session_id: &str,
    amount: Option<i64>,
    items: Option<&str>,
) -> anyhow::Result<()> {
    let id = SessionId::parse(session_id).map_err(anyhow::Error::msg)?;
    let flagged = |error: RefundError| match error {
        RefundError::Invalid { field, message } => anyhow::anyhow!("--{field}: {message}"),
        error => error.into(),
    };
    let ask = RefundAsk::new(amount, items).map_err(flagged)?;
    let config = settings.validate()?;
    let Refunded { refund, currency } = with_core(&config, async |core| {
        let outcome = refunding::recorded(&core.db, &id).await?;
        refunding::refund(&core.db, &core.stripe, &outcome, &ask)
            .await
            .map_err(flagged)
    })
    .await?;
    println!(
        "{id}: refund {} of {}, {}; the reversal follows from Stripe's webhooks",
        refund.id,
        format_amount(refund.amount, &currency),
        refund.status
    );
    Ok(())
}

/// `fulfilld sessions show <SESSION_ID>`.
async fn show(settings: &Settings, session_id: &str) -> anyhow::Result<()> {
    let id = SessionId::parse(session_id).map_err(anyhow::Error::msg)?;
    let db = Database::connect(&settings.database_url()?).await?;
    let events = db.events_of(id.as_str()).await?;
    let Some(mut outcome) = db.outcome(&id).await? else {
        println!("{id}: nothing recorded (`fulfilld fulfill {id}` asks Stripe)");
        for event in &events {
            print_session_event(event);
        }
        return Ok(());
    };
    db.leave_off_shipment(&mut outcome).await?;
    println!("{id}: {}", outcome.status.as_str());
    if let Some(account) = &outcome.account {
        println!("account: {account}");
    }
    if let Some(total) = outcome.formatted_total(format_amount) {
        println!("total: {total}");
    }
    if let Some(refunded) = outcome.formatted_refunded(format_amount) {
        println!("refunded: {refunded}");
    }
    for line in outcome.item_lines(format_amount) {
        println!(
            "  {} x {}  {}",
            line.quantity, line.description, line.amount
        );
    }
    for grant in &outcome.access {
        let revoked = match grant.status {
            GrantStatus::Active => "",
            GrantStatus::Suspended => " (suspended: disputed)",
            GrantStatus::Revoked => " (revoked)",
        };
        println!("access: {} {}{revoked}", grant.sku, grant.url);
    }
    if let Some(shipment) = &outcome.shipment {
        let items: Vec<_> = shipment
            .items
            .iter()
            .map(|item| format!("{} x {}", item.quantity, item.sku))
            .collect();
        println!(
            "shipment: {} ({})",
            shipment.status.as_str(),
            items.join(", ")
        );
    }
    for event in &events {
        print_session_event(event);
    }
    for effect in db.list_effects_of(&id).await? {
        let error = effect
            .last_error
            .map(|error| format!(" ({error})"))
            .unwrap_or_default();
        println!(
            "effect {} {}: {} after {} attempts{error}",
            effect.id, effect.kind, effect.status, effect.attempts
        );
    }
    Ok(())
}

fn print_event(event: &EventView) {
    println!(
        "{:<32}  {:<44}  {:<40}  {:<9}  {:>8}  {}",
        event.id,
        event.event_type,
        event.session_id,
        event.state(),
        event.attempts,
        event.last_error.as_deref().unwrap_or_default()
    );
}

fn print_session_event(event: &EventView) {
    let error = event
        .last_error
        .as_ref()
        .map(|error| format!(" ({error})"))
        .unwrap_or_default();
    println!(
        "event {} {}: {} after {} attempts{error}",
        event.id,
        event.event_type,
        event.state(),
        event.attempts
    );
}
