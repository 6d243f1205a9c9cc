//! What each CLI command does.

mod operator;

use anyhow::Context;

use crate::bench;
use crate::cli::{Cli, Command, EffectsCommand};
use crate::configuration::Settings;
use crate::db::{self, Database, DatabaseUrl};
use crate::domain::{EffectStatus, SessionId};
use crate::fulfillment::{Source, Trigger};
use crate::startup::{Application, Core, shutdown_signal};

/// Runs the command `cli` names. Must run inside an actix system.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = cli.settings.validate()?;
            Application::build(config)
                .await?
                .run_until_stopped(shutdown_signal())
                .await?;
        }
        Command::Migrate => {
            let url = database_url(&cli.settings)?;
            db::migrate(&url).await?;
            println!("migrations applied ({})", url.backend());
        }
        Command::Fulfill { session_id } => {
            let id = SessionId::parse(&session_id).map_err(anyhow::Error::msg)?;
            let config = cli.settings.validate()?;
            let core = Core::start(&config).await?;
            let outcome = core
                .sessions
                .handle(&id, Trigger::Fulfill(Source::Operator))
                .await
                .with_context(|| format!("could not fulfil {id}"))?;
            let total = outcome
                .formatted_total()
                .map(|total| format!(", {total}"))
                .unwrap_or_default();
            println!(
                "{id}: {} ({} line items{total})",
                outcome.status.as_str(),
                outcome.line_items.len()
            );
        }
        Command::Reconcile { since } => operator::reconcile(&cli.settings, since).await?,
        Command::Events { command } => operator::events(&cli.settings, command).await?,
        Command::Sessions { command } => operator::sessions(&cli.settings, command).await?,
        Command::Effects { command } => effects(&cli.settings, command).await?,
        Command::Bench(args) => bench::run(args, &database_url(&cli.settings)?).await?,
    }
    Ok(())
}

async fn effects(settings: &Settings, command: EffectsCommand) -> anyhow::Result<()> {
    let url = database_url(settings)?;
    let db = Database::connect(&url).await?;
    match command {
        EffectsCommand::List { dead, limit } => {
            let effects = db
                .list_effects(dead.then_some(EffectStatus::Dead), limit.max(1))
                .await?;
            println!(
                "{:>8}  {:<40}  {:<20}  {:<7}  {:>8}  LAST ERROR",
                "ID", "SESSION", "KIND", "STATUS", "ATTEMPTS"
            );
            for effect in effects {
                println!(
                    "{:>8}  {:<40}  {:<20}  {:<7}  {:>8}  {}",
                    effect.id,
                    effect.session_id,
                    effect.kind,
                    effect.status,
                    effect.attempts,
                    effect.last_error.unwrap_or_default()
                );
            }
        }
        EffectsCommand::Retry { id } => {
            if !db.revive_effect(id).await? {
                anyhow::bail!("no dead effect has id {id} (see `fulfilld effects list --dead`)");
            }
            println!("effect {id} will be retried by the serving fulfilld");
        }
    }
    Ok(())
}

fn database_url(settings: &Settings) -> anyhow::Result<DatabaseUrl> {
    Ok(settings.database_url()?)
}
