//! `fulfilld orders export`: one row per fulfilled line, for the books, streamed a page at
//! a time so that a million orders take no more memory than a thousand.

use std::io::{IsTerminal, Write};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::cli::OrdersFormat;
use crate::configuration::Settings;
use crate::db::orders::OrderLine;
use crate::db::{Database, millis, now_ms};

/// Lines read per page.
const PAGE: i64 = 1_000;

/// A row of the export.
#[derive(Serialize)]
struct Row<'a> {
    session_id: &'a str,
    /// RFC 3339, UTC.
    fulfilled_at: String,
    email: &'a str,
    /// From the catalog's price; the line's description when the catalog lacks it.
    sku: &'a str,
    description: &'a str,
    quantity: i64,
    /// The line's total, in minor units.
    amount: i64,
    currency: &'a str,
    status: &'a str,
    /// What was refunded of the whole session, in minor units.
    amount_refunded: i64,
    livemode: bool,
    account: &'a str,
}

impl<'a> Row<'a> {
    fn new(line: &'a OrderLine, catalog: &'a Catalog) -> Self {
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(line.fulfilled_at).unwrap_or(0));
        let sku = line
            .price_id
            .as_deref()
            .and_then(|price| catalog.products().iter().find(|p| p.price == price))
            .map_or("", |product| product.sku.as_str());
        Self {
            session_id: &line.session_id,
            fulfilled_at: humantime::format_rfc3339_millis(at).to_string(),
            email: line.customer_email.as_deref().unwrap_or_default(),
            sku,
            description: &line.description,
            quantity: line.quantity,
            amount: line.amount,
            currency: &line.currency,
            status: &line.status,
            amount_refunded: line.amount_refunded,
            livemode: line.livemode,
            account: line.account.as_deref().unwrap_or_default(),
        }
    }
}

/// The export's writer.
enum Output {
    Csv(Box<csv::Writer<std::io::BufWriter<Box<dyn Write>>>>),
    Jsonl(std::io::BufWriter<Box<dyn Write>>),
}

impl Output {
    fn write(&mut self, row: &Row<'_>) -> anyhow::Result<()> {
        match self {
            Self::Csv(writer) => writer.serialize(row)?,
            Self::Jsonl(writer) => {
                serde_json::to_writer(&mut *writer, row)?;
                writer.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Csv(writer) => writer.flush(),
            Self::Jsonl(writer) => writer.flush(),
        }
    }
}

/// Writes the lines of orders fulfilled in the last `since` to `out` (stdout when
/// `None`) as `format`; a progress bar on stderr when it is a terminal.
pub async fn export(
    settings: &Settings,
    since: Duration,
    format: OrdersFormat,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let catalog = settings.effects.catalog()?;
    let db = Database::connect(&settings.database_url()?).await?;
    let from = now_ms() - millis(since);
    let sink: Box<dyn Write> = match out {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("could not create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let sink = std::io::BufWriter::new(sink);
    // Both write through buffers of their own size: nothing accumulates.
    let mut output = match format {
        OrdersFormat::Csv => Output::Csv(Box::new(csv::Writer::from_writer(sink))),
        OrdersFormat::Jsonl => Output::Jsonl(sink),
    };
    let progress = match std::io::stderr().is_terminal() {
        true => {
            let total = db.count_order_lines(from).await?;
            let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} lines {eta} left")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        false => ProgressBar::hidden(),
    };
    let mut cursor = None;
    let mut written = 0u64;
    loop {
        let page = db.order_lines(from, cursor.as_ref(), PAGE).await?;
        for line in &page {
            output.write(&Row::new(line, &catalog))?;
        }
        written += page.len() as u64;
        progress.set_position(written);
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => {
                cursor = Some((last.fulfilled_at, last.session_id.clone(), last.line_number));
            }
            _ => break,
        }
    }
    output.flush().context("could not write the export")?;
    progress.finish_and_clear();
    eprintln!("{written} order lines exported");
    Ok(())
}
