//! The command line: `fulfilld [serve]`, `migrate`, `fulfill`, `reconcile`, `events`,
//! `sessions`, `effects`, `orders`, `healthcheck`, `bench`.

use std::time::Duration;

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::bench::BenchArgs;
use crate::configuration::file::{self, Resolved};
use crate::configuration::{ConfigError, Settings, parse_duration};

/// `fulfilld --version`: the release and the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FULFILLD_REVISION"),
    ")"
);

/// Exactly-once fulfillment for Stripe Checkout.
#[derive(Parser)]
#[command(name = "fulfilld", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// A settings file (TOML, keys named as the environment variables), under the
    /// environment and the command line [default: fulfilld.toml when present].
    #[arg(long, env = "FULFILLD_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Clone)]
pub enum Command {
    /// Serve webhooks and the landing page (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Fulfil one Checkout Session now, through the same path as a webhook, and print the
    /// outcome.
    Fulfill {
        /// The Checkout Session id (cs_test_… or cs_live_…).
        session_id: String,
    },
    /// Find in Stripe what no webhook delivered (the Checkout events and complete
    /// sessions of the window) and fulfil it; prints what it found and did.
    Reconcile {
        /// How far back to look: `90m`, `72h`, `7d` (Stripe keeps events for 30 days).
        #[arg(long, default_value = "72h", value_parser = parse_duration)]
        since: Duration,
    },
    /// Stored webhook events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// What fulfilld recorded about Checkout Sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Inspect the side effects (emails, stock, shipments) and retry dead ones.
    Effects {
        #[command(subcommand)]
        command: EffectsCommand,
    },
    /// Orders for the books.
    Orders {
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// The effective settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Ask a running server whether it is ready (`/readyz`); exits 0 if so, 1 if not,
    /// for container and orchestrator probes.
    Healthcheck {
        /// The readiness URL [default: /readyz on BIND, on 127.0.0.1 when BIND is every
        /// address].
        #[arg(long)]
        url: Option<String>,
    },
    /// Measure this build: starts fulfilld on a fresh database (SQLite, or a new
    /// database on the PostgreSQL server of DATABASE_URL), a Stripe double and a mail
    /// server, drives signed webhooks through them, checks every session was fulfilled
    /// once, and prints the performance table.
    Bench(BenchArgs),
}

#[derive(Subcommand, Clone)]
pub enum ConfigCommand {
    /// Every setting's value (secrets redacted) and where it came from: the command line,
    /// the environment, the settings file or the default.
    Show,
}

#[derive(Subcommand, Clone)]
pub enum OrdersCommand {
    /// One row per line of every order fulfilled in the window: session, time, email,
    /// SKU, quantity, amount, currency, status, refunds. Streamed, a page at a time.
    Export {
        /// How far back: `30d`, `72h`.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        since: Duration,
        #[arg(long, value_enum, default_value = "csv")]
        format: OrdersFormat,
        /// Where to write [default: standard output].
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

/// How orders are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrdersFormat {
    /// Comma-separated, with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Subcommand, Clone)]
pub enum EffectsCommand {
    /// List effects, newest first.
    List {
        /// Only the dead ones: failed for good, waiting for an operator.
        #[arg(long)]
        dead: bool,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Make a dead effect pending again; a serving fulfilld carries it out.
    Retry {
        /// The effect's id, as `effects list` shows it.
        id: i64,
    },
}

#[derive(Subcommand, Clone)]
pub enum EventsCommand {
    /// List stored events, newest first, with their attempts and last error.
    List {
        /// Only the dead ones: they could not be carried out, and wait for an operator.
        #[arg(long)]
        dead: bool,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Carry out a stored event again through its session's actor (harmless if done); a
    /// dead event is brought back to life first.
    Replay {
        /// The event's id (evt_…).
        event_id: String,
    },
}

#[derive(Subcommand, Clone)]
pub enum SessionsCommand {
    /// Show a session's recorded outcome and its side effects, from the database only.
    Show {
        /// The Checkout Session id (cs_test_… or cs_live_…).
        session_id: String,
    },
    /// Refund a fulfilled session at Stripe; the reversal follows from Stripe's webhooks.
    /// The same command run again (after a timeout, say) refunds nothing more.
    Refund {
        /// The Checkout Session id (cs_test_… or cs_live_…).
        session_id: String,
        /// How much, in minor units (cents); the rest of the payment when left out.
        #[arg(long)]
        amount: Option<i64>,
        /// The items refunded, `SKU:QTY,…`: their access is revoked.
        #[arg(long)]
        items: Option<String>,
    },
}

/// The command line as parsed, and every setting as resolved.
pub struct Parsed {
    pub cli: Cli,
    pub settings: Vec<Resolved>,
}

/// Why the command line could not be taken.
#[derive(Debug)]
pub enum ParseError {
    /// Help, the version, or a flag or value clap refused; `file` names the settings
    /// file and `from_file` the settings it gave, so that an error about one says so.
    Clap {
        error: clap::Error,
        file: Option<std::path::PathBuf>,
        from_file: Vec<String>,
    },
    /// The settings file could not be read, or names what is no setting.
    Config(ConfigError),
}

/// Parses `args` (the program's name first), with the settings file's values under the
/// environment's and the command line's.
pub fn parse(args: Vec<OsString>) -> Result<Parsed, ParseError> {
    let first = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .ok();
    let config = first
        .as_ref()
        .and_then(|matches| matches.get_one::<std::path::PathBuf>("config").cloned());
    let first = first.unwrap_or_default();
    let layered = file::layer(Cli::command(), config.as_deref()).map_err(ParseError::Config)?;
    let refused = |error| ParseError::Clap {
        error,
        file: layered.file.clone(),
        from_file: layered.from_file.clone(),
    };
    let matches = layered
        .command
        .clone()
        .try_get_matches_from(&args)
        .map_err(refused)?;
    let cli = Cli::from_arg_matches(&matches).map_err(refused)?;
    Ok(Parsed {
        cli,
        settings: file::resolved(&first, &matches, &layered),
    })
}
