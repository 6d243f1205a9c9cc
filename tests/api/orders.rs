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

/// Writes `count` fulfilled orders of `lines` lines each, behind the engine's back, each
/// a millisecond apart, or all in one when `same_time`.
async fn seed_orders(app: &TestApp, count: u32, lines: u32, same_time: bool) {
    let now = fulfilld::db::now_ms();
    let apart = if same_time { 0 } else { 1 };
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
         'buyer' || n || '@example.com', {now} - {apart} * n, {now}, {now} \
         FROM ({numbers}) AS s"
    ))
    .await;
    for line in 0..lines {
        app.execute(&format!(
            "INSERT INTO line_items (session_id, line_number, id, price_id, description, \
             quantity, currency, unit_amount, amount_subtotal, amount_total) \
             SELECT 'cs_test_bulk' || n, {line}, 'li_bulk{line}_' || n, 'price_tee_m', \
             'Line {line}', 1, 'usd', 2500, 2500, 2500 FROM ({numbers}) AS s"
        ))
        .await;
    }
}

/// Runs the export to a file and returns how many lines it wrote and the most memory
/// the process held (its VmHWM, read while it ran).
async fn export_peak(app: &TestApp) -> (usize, u64) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (rows, peak) = export_to(app, &dir.path().join("orders.csv")).await;
    (rows.len() - 1, peak)
}

/// Runs the CSV export into `out`; its lines and the process's peak memory.
async fn export_to(app: &TestApp, out: &std::path::Path) -> (Vec<String>, u64) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args([
            "orders", "export", "--since", "1d", "--format", "csv", "--output",
        ])
        .arg(out)
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
    let rows = std::fs::read_to_string(out)
        .expect("export written")
        .lines()
        .map(str::to_owned)
        .collect();
    (rows, peak)
}

#[actix_web::test]
async fn a_hundred_thousand_orders_export_in_the_memory_of_a_thousand() {
    for backend in backends() {
        let small = spawn_app(&backend).await;
        seed_orders(&small, 1_000, 1, false).await;
        let large = spawn_app(&backend).await;
        seed_orders(&large, 100_000, 1, false).await;

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

#[actix_web::test]
async fn orders_fulfilled_in_one_millisecond_across_pages_are_each_exported_once() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        // 1,500 lines in one millisecond, two to an order: pages of 1,000 end mid-order.
        seed_orders(&app, 750, 2, true).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = dir.path().join("orders.csv");
        let (rows, _) = export_to(&app, &out).await;

        let mut lines: Vec<(String, String)> = rows[1..]
            .iter()
            .map(|row| {
                let mut cells = row.split(',');
                let session = cells.next().unwrap_or_default().to_owned();
                (session, row.clone())
            })
            .collect();
        assert_eq!(lines.len(), 1_500, "on {}", app.backend);
        lines.sort();
        lines.dedup();
        assert_eq!(
            lines.len(),
            1_500,
            "a line exported twice on {}",
            app.backend
        );
        // Readable by its owner only, and only under its name once whole.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out)
            .expect("exported")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("orders.partial").exists());
    }
}

#[actix_web::test]
async fn a_formula_is_never_a_cell_refunds_add_up_and_an_empty_export_has_its_header() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let (empty, _) = export_to(&app, &dir.path().join("empty.csv")).await;
        assert_eq!(empty.len(), 1);
        assert!(empty[0].starts_with("session_id,fulfilled_at,email,"));

        let mut spec = order();
        spec.email = Some("=HYPERLINK(\"http://evil.example\")@example.com".into());
        let session = app.stripe.add_session(spec);
        app.deliver(
            &format!("evt_{session}"),
            "checkout.session.completed",
            &session,
        )
        .await;
        app.wait_for(&session, Status::Fulfilled).await;
        app.execute(&format!(
            "UPDATE checkout_sessions SET amount_refunded = 900 WHERE id = '{session}'"
        ))
        .await;

        let csv = app
            .cli(&["orders", "export", "--since", "1d", "--format", "csv"])
            .await;
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let rows: Vec<csv::StringRecord> =
            reader.records().map(|row| row.expect("a row")).collect();
        assert_eq!(rows.len(), 2, "{csv}");
        assert!(rows[0][2].starts_with("'="), "{csv}");
        let refunded: Vec<&str> = rows.iter().map(|row| &row[9]).collect();
        assert_eq!(refunded, ["900", "0"], "{csv}");
    }
}
