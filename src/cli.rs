//! The command line: `fulfilld [serve]`, `migrate`, `fulfill <SESSION_ID>`.

use clap::{Parser, Subcommand};

use crate::configuration::Settings;

/// Exactly-once fulfillment for Stripe Checkout.
#[derive(Parser)]
#[command(name = "fulfilld", version, about, long_about = None)]
pub struct Cli {
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
}
