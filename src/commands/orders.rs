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
    /// What was refunded of the whole order, in minor units: on its first line only, so
    /// that the column adds up.
    amount_refunded: i64,
    livemode: bool,
    account: &'a str,
}

/// The columns, in order: the header of an export with no rows too.
const COLUMNS: [&str; 12] = [
    "session_id",
    "fulfilled_at",
    "email",
    "sku",
    "description",
    "quantity",
    "amount",
    "currency",
    "status",
    "amount_refunded",
    "livemode",
    "account",
];

impl<'a> Row<'a> {
    /// `first`: the first line of its order in the export.
    fn new(line: &'a OrderLine, catalog: &'a Catalog, first: bool) -> Self {
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(line.fulfilled_at).unwrap_or(0));
        let sku = line
            .price_id
            .as_deref()
            .and_then(|price| catalog.by_price(price))
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
            amount_refunded: if first { line.amount_refunded } else { 0 },
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
            Self::Csv(writer) => {
                // A spreadsheet opening the file must not take a customer's text for a
                // formula: a cell that starts like one is quoted as text.
                let cells = [
                    row.session_id,
                    &row.fulfilled_at,
                    row.email,
                    row.sku,
                    row.description,
                    &row.quantity.to_string(),
                    &row.amount.to_string(),
                    row.currency,
                    row.status,
                    &row.amount_refunded.to_string(),
                    &row.livemode.to_string(),
                    row.account,
                ]
                .map(|cell| {
                    match cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                        true if cell.parse::<i64>().is_err() => format!("'{cell}"),
                        _ => cell.to_owned(),
                    }
                });
                writer.write_record(&cells)?;
            }
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
    // A file is written beside its name, readable by its owner only (it holds customers'
    // addresses), and takes the name only once whole.
    let partial = out.map(|path| path.with_extension("partial"));
    let sink: Box<dyn Write> = match &partial {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            Box::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("could not create {}", path.display()))?,
            )
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let sink = std::io::BufWriter::new(sink);
    // Both write through buffers of their own size: nothing accumulates.
    let mut output = match format {
        OrdersFormat::Csv => {
            let mut writer = csv::Writer::from_writer(sink);
            writer.write_record(COLUMNS)?;
            Output::Csv(Box::new(writer))
        }
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
    let mut previous: Option<String> = None;
    let mut written = 0u64;
    loop {
        let page = db.order_lines(from, cursor.as_ref(), PAGE).await?;
        for line in &page {
            let first = previous.as_deref() != Some(line.session_id.as_str());
            output.write(&Row::new(line, &catalog, first))?;
            previous = Some(line.session_id.clone());
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
    drop(output);
    if let (Some(partial), Some(path)) = (&partial, out) {
        std::fs::rename(partial, path)
            .with_context(|| format!("could not name the export {}", path.display()))?;
    }
    progress.finish_and_clear();
    eprintln!("{written} order lines exported");
    Ok(())
}
