//! What each CLI command does.

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::db::{self, DatabaseUrl};
use crate::domain::SessionId;
use crate::fulfillment::{Source, Trigger};
use crate::startup::{Application, Core};

/// Runs the command `cli` names. Must run inside an actix system.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = cli.settings.validate()?;
            Application::build(config)
                .await?
                .run_until_stopped()
                .await?;
        }
        Command::Migrate => {
            let url = DatabaseUrl::parse(&cli.settings.database_url).map_err(|problem| {
                anyhow::anyhow!("configuration error: DATABASE_URL: {problem}")
            })?;
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
    }
    Ok(())
}
