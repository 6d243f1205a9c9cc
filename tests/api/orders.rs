//! `fulfilld orders export`: every fulfilled line of the window, for the books, as CSV or
//! JSON lines, in flat memory however many orders there are.

use std::time::Duration;

use fulfilld::domain::Status;
use fulfilld::sandbox::SessionSpec;
use serde_json::Value;

use crate::helpers::{TestApp, backends, spawn_app};

/// A T-shirt pair and an e-book, at the catalog's prices.
fn order() -> SessionSpec {
    SessionSpec::paid(&[("T-shirt, medium", 2500, 2), ("E-book", 900, 1)])
        .with_prices(&["price_tee_m", "price_ebook"])
}

#[actix_web::test]
async fn each_fulfilled_line_of_the_window_is_one_row_in_csv_and_in_json_lines() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let recent = app.stripe.add_session(order());
        let old = app.stripe.add_session(order());
        for session in [&recent, &old] {
            app.deliver(
                &format!("evt_{session}"),
                "checkout.session.completed",
                session,
            )
            .await;
            app.wait_for(session, Status::Fulfilled).await;
        }
        // Fulfilled 40 days ago: outside a 30-day window.
        let long_ago = fulfilld::db::now_ms() - 40 * 86_400_000;
        app.execute(&format!(
            "UPDATE checkout_sessions SET fulfilled_at = {long_ago} WHERE id = '{old}'"
        ))
        .await;

        let csv = app
            .cli(&["orders", "export", "--since", "30d", "--format", "csv"])
            .await;
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(
            reader
                .headers()
                .expect("a header row")
                .iter()
                .collect::<Vec<_>>(),
            [
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
                "account"
            ]
        );
        let rows: Vec<csv::StringRecord> =
            reader.records().map(|row| row.expect("a row")).collect();
        assert_eq!(rows.len(), 2, "{csv}");
        let tee: Vec<&str> = rows[0].iter().collect();
        assert_eq!(tee[0], recent);
        assert!(tee[1].ends_with('Z') && tee[1].contains('T'), "{}", tee[1]);
        assert_eq!(
            tee[2..].to_vec(),
            [
                "customer@example.com",
                "TEE-M",
                "T-shirt, medium",
                "2",
                "5000",
                "usd",
                "fulfilled",
                "0",
                "false",
                ""
            ]
        );
        let ebook: Vec<&str> = rows[1].iter().collect();
        assert_eq!(
            (ebook[0], ebook[3], ebook[5], ebook[6]),
            (recent.as_str(), "EBOOK-FULFILL", "1", "900")
        );

        let jsonl = app
            .cli(&["orders", "export", "--since", "60d", "--format", "jsonl"])
            .await;
        let lines: Vec<Value> = jsonl
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON object a line"))
            .collect();
        assert_eq!(lines.len(), 4, "{jsonl}");
        // In the order they were fulfilled: the old order first.
        assert_eq!(lines[0]["session_id"], old.as_str());
        assert_eq!(lines[0]["sku"], "TEE-M");
        assert_eq!(lines[3]["session_id"], recent.as_str());
        assert_eq!(lines[3]["amount"], 900);
    }
}

/// Writes `count` fulfilled orders of one line each, behind the engine's back.
async fn seed_orders(app: &TestApp, count: u32) {
    let now = fulfilld::db::now_ms();
    let numbers = match app.backend {
        "postgres" => format!("SELECT n FROM generate_series(1, {count}) AS n"),
        _ => format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {count}) \
             SELECT n FROM g"
        ),
    };
    app.execute(&format!(
        "INSERT INTO checkout_sessions (id, status, livemode, currency, amount_total, \
         customer_email, fulfilled_at, created_at, updated_at) \
         SELECT 'cs_test_bulk' || n, 'fulfilled', FALSE, 'usd', 2500, \
         'buyer' || n || '@example.com', {now} - n, {now}, {now} FROM ({numbers}) AS s"
    ))
    .await;
    app.execute(&format!(
        "INSERT INTO line_items (session_id, line_number, id, price_id, description, \
         quantity, currency, unit_amount, amount_subtotal, amount_total) \
         SELECT 'cs_test_bulk' || n, 0, 'li_bulk' || n, 'price_tee_m', 'T-shirt, medium', \
         1, 'usd', 2500, 2500, 2500 FROM ({numbers}) AS s"
    ))
    .await;
}

/// Runs the export to a file and returns how many lines it wrote and the most memory
/// the process held (its VmHWM, read while it ran).
async fn export_peak(app: &TestApp) -> (usize, u64) {
    let out = tempfile::NamedTempFile::new().expect("temporary file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args([
            "orders", "export", "--since", "1d", "--format", "csv", "--output",
        ])
        .arg(out.path())
        .env("DATABASE_URL", app.database_url())
        .env("STRIPE_SECRET_KEY", crate::helpers::STRIPE_SECRET_KEY)
        .env("STRIPE_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET)
        .env("RUST_LOG", "off")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("fulfilld runs");
    let status = format!("/proc/{}/status", child.id().expect("running"));
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kb) = text
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(done) = child.try_wait().expect("waited") {
            assert!(done.success(), "{done:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rows = std::fs::read_to_string(out.path())
        .expect("export written")
        .lines()
        .count();
    (rows - 1, peak)
}

#[actix_web::test]
async fn a_hundred_thousand_orders_export_in_the_memory_of_a_thousand() {
    for backend in backends() {
        let small = spawn_app(&backend).await;
        seed_orders(&small, 1_000).await;
        let large = spawn_app(&backend).await;
        seed_orders(&large, 100_000).await;

        let (rows, small_peak) = export_peak(&small).await;
        assert_eq!(rows, 1_000);
        let (rows, large_peak) = export_peak(&large).await;
        assert_eq!(rows, 100_000);
        eprintln!(
            "peak memory exporting 1,000 orders: {small_peak} kB; 100,000: {large_peak} kB ({})",
            large.backend
        );
        // Held in memory, 100,000 rows would be tens of megabytes more.
        assert!(
            large_peak < small_peak + 8 * 1024,
            "{large_peak} kB for 100,000 against {small_peak} kB for 1,000 on {}",
            large.backend
        );
    }
}
