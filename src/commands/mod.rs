//! What each CLI command does.

mod operator;
mod orders;

use anyhow::Context;

use crate::bench;
use crate::cli::{Cli, Command, ConfigCommand, EffectsCommand, OrdersCommand};
use crate::configuration::file::Resolved;
use crate::configuration::{Config, Settings};
use crate::db::{self, Database, DatabaseUrl};
use crate::domain::{EffectStatus, SessionId, format_amount};
use crate::fulfillment::{Source, Trigger};
use crate::replicas::{Replica, Role};
use crate::startup::{Application, Core, shutdown_signal};

/// Runs the command `cli` names, with `settings` as they were resolved. Must run inside
/// an actix system.
pub async fn run(cli: Cli, settings: Vec<Resolved>) -> anyhow::Result<()> {
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
            let outcome = with_core(&config, async |core| {
                core.sessions
                    .handle(&id, Trigger::Fulfill(Source::Operator(None)))
                    .await
                    .with_context(|| format!("could not fulfil {id}"))
            })
            .await?;
            let total = outcome
                .formatted_total(format_amount)
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
        Command::Orders {
            command:
                OrdersCommand::Export {
                    since,
                    format,
                    output,
                },
        } => orders::export(&cli.settings, since, format, output.as_deref()).await?,
        Command::Config {
            command: ConfigCommand::Show,
        } => show_settings(&settings),
        Command::Healthcheck { url } => {
            let url = url.unwrap_or_else(|| readiness_url(cli.settings.bind));
            healthcheck(&url).await?;
        }
        Command::Bench(args) => bench::run(args, &database_url(&cli.settings)?).await?,
    }
    Ok(())
}

/// Runs `work` on the engine, its Stripe calls paced at this command's share of
/// `STRIPE_MAX_RPS`: while it runs, the command is one of the members sharing the budget
/// with the replicas serving this database (alone, it has all of it), and it leaves when
/// `work` ends, fails or is interrupted (Ctrl-C, SIGTERM), so that they take their share
/// back at once.
async fn with_core<T>(
    config: &Config,
    work: impl AsyncFnOnce(&Core) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let core = Core::start(config).await?;
    let member = Replica::join(
        &core.db,
        &config.database_url,
        core.stripe.pacer().clone(),
        config.stripe.max_rps,
        Role::Command,
    )
    .await
    .context("could not join the replicas sharing the Stripe budget")?;
    let outcome = tokio::select! {
        outcome = work(&core) => outcome,
        () = shutdown_signal() => Err(anyhow::anyhow!(
            "interrupted: what it had already asked of Stripe may have been done; the same \
             command run again is safe, its requests keep their idempotency keys"
        )),
    };
    member.leave().await;
    outcome
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

/// `/readyz` of a server listening on `bind`, reached from this machine.
fn readiness_url(bind: std::net::SocketAddr) -> String {
    let ip = match bind.ip() {
        ip if ip.is_unspecified() && ip.is_ipv6() => {
            std::net::IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        }
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    format!(
        "http://{}/readyz",
        std::net::SocketAddr::new(ip, bind.port())
    )
}

/// Whether the server at `url` says it is ready; an error (and exit status 1) if it does
/// not answer within 5 seconds or answers anything but 2xx.
async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        // A probe asks this machine's server, never through HTTP(S)_PROXY.
        .no_proxy()
        .build()
        .context("could not build an HTTP client")?;
    let answer = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("not ready: no answer from {url}"))?;
    anyhow::ensure!(
        answer.status().is_success(),
        "not ready: {url} answered {}",
        answer.status()
    );
    println!("ready");
    Ok(())
}

/// `fulfilld config show`: each setting, its value (secrets redacted) and its source.
fn show_settings(settings: &[Resolved]) {
    let width = settings.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for setting in settings {
        let value = match (&setting.value, setting.secret, &setting.source) {
            (_, true, crate::configuration::file::Source::Unset) => "(unset)".to_owned(),
            (_, true, _) => "(secret, set)".to_owned(),
            (Some(value), false, _) => without_password(value),
            (None, false, _) => "(unset)".to_owned(),
        };
        println!(
            "{:<width$}  {:<40}  {}",
            setting.name, value, setting.source
        );
    }
}

/// `value` with the password of a URL in it (`postgres://user:password@host`) hidden.
fn without_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                ":(hidden)"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{}", &rest[authority_end..])
        }
        None => value.to_owned(),
    }
}
