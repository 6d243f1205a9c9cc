//! A SQLite database that cannot be written for a while: its files made immutable, which
//! stops root too, as a full disk or a file made read-only would. Deliveries are answered
//! 503 so that Stripe retries, nothing is half-written, and once the files can be written
//! again everything resumes.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use fulfilld::domain::Status;
use fulfilld::sandbox::SessionSpec;

use crate::helpers::{Backend, TestApp, spawn_app};

/// Files made immutable until dropped.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` when the file system cannot make them so (then the test is skipped).
    fn set(files: Vec<PathBuf>) -> Option<Self> {
        let mut guard = Self(Vec::new());
        for file in files.into_iter().filter(|file| file.exists()) {
            let made = Command::new("chattr").arg("+i").arg(&file).status();
            if !made.is_ok_and(|status| status.success()) {
                return None;
            }
            guard.0.push(file);
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(file).status();
        }
    }
}

#[derive(QueryableByName)]
struct Check {
    #[diesel(sql_type = diesel::sql_types::Text)]
    integrity_check: String,
}

/// A session fulfilled, and everything it caused done, before the fault: its id.
pub(crate) async fn fulfilled_before(app: &TestApp) -> String {
    let before = app
        .stripe
        .add_session(SessionSpec::paid(&[("Lamp", 4000, 1)]));
    app.deliver("evt_before", "checkout.session.completed", &before)
        .await;
    app.wait_for(&before, Status::Fulfilled).await;
    app.drained().await;
    before
}

/// Delivers `event` about `session` again, as Stripe retries, until it is stored (200).
pub(crate) async fn redeliver_until_stored(app: &TestApp, event: &str, session: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let retried = app
            .deliver(event, "checkout.session.completed", session)
            .await;
        if retried.status() == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "still {}", retried.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that the SQLite file at `path` passes its integrity check.
pub(crate) fn assert_intact(path: &std::path::Path) {
    let mut conn = SqliteConnection::establish(&path.display().to_string()).expect("opens");
    let check: Check = diesel::sql_query("PRAGMA integrity_check")
        .get_result(&mut conn)
        .expect("checked");
    assert_eq!(check.integrity_check, "ok");
}

#[actix_web::test]
async fn a_sqlite_file_that_cannot_be_written_gets_503s_then_resumes_uncorrupted() {
    let app = spawn_app(&Backend::Sqlite).await;
    let path = PathBuf::from(app.database_url().trim_start_matches("sqlite://"));
    let before = fulfilled_before(&app).await;

    let files = ["", "-wal", "-shm"]
        .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
        .to_vec();
    let Some(immutable) = Immutable::set(files) else {
        eprintln!("skipped: this file system cannot make files immutable (chattr +i)");
        return;
    };
    let during = app
        .stripe
        .add_session(SessionSpec::paid(&[("Vase", 5000, 1)]));
    let refused = app
        .deliver("evt_during", "checkout.session.completed", &during)
        .await;
    assert_eq!(refused.status(), 503, "Stripe must retry");
    let page = app
        .get(&format!("/after-checkout?session_id={during}"))
        .await;
    assert_eq!(page.status(), 503);
    assert!(
        page.text()
            .await
            .expect("body")
            .contains("We are confirming your order")
    );

    drop(immutable);
    // Stripe's retry, once the files can be written again.
    redeliver_until_stored(&app, "evt_during", &during).await;
    app.wait_for(&during, Status::Fulfilled).await;
    app.drained().await;
    for session in [&before, &during] {
        assert_eq!(
            app.effects(session).await,
            [("receipt".to_owned(), "done".to_owned())]
        );
    }
    assert_intact(&path);
}
