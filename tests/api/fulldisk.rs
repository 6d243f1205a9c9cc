//! A SQLite database on a disk that fills up: a small tmpfs of its own, filled by another
//! file. Deliveries that cannot be stored are answered 503 so that Stripe retries, every
//! delivery answered 200 is fulfilled, and once space is freed everything resumes with
//! the file intact.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use fulfilld::domain::Status;
use fulfilld::sandbox::SessionSpec;

use crate::helpers::{Backend, spawn_app_with};
use crate::readonly::{assert_intact, fulfilled_before, redeliver_until_stored};

/// A tmpfs of `size` mounted on a temporary directory until dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this machine will not mount one (not root): the test is then skipped.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        mounted
            .is_ok_and(|status| status.success())
            .then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with `file`; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler created");
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // The last bytes there were room for.
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[actix_web::test]
async fn a_full_disk_gets_503s_loses_no_acknowledged_delivery_and_resumes_once_freed() {
    let Some(disk) = SmallDisk::mount("16m") else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let path = disk.path().join("fulfilld.db");
    let url = format!("sqlite://{}", path.display());
    let app = spawn_app_with(&Backend::Sqlite, |settings| {
        settings.database_url = Some(url.clone());
    })
    .await;
    let before = fulfilled_before(&app).await;

    let filler = disk.fill();
    // Deliveries until the disk refuses one: those answered 200 must be kept; the
    // first few may still fit in pages SQLite had already.
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for n in 0..200 {
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Vase", 5000 + n, 1)]));
        let answer = app
            .deliver(
                &format!("evt_full_{n}"),
                "checkout.session.completed",
                &session,
            )
            .await;
        match answer.status().as_u16() {
            200 => kept.push((n, session)),
            503 => {
                refused.push((n, session));
                if refused.len() == 3 {
                    break;
                }
            }
            other => panic!("a full disk answered {other}"),
        }
    }
    assert!(!refused.is_empty(), "the disk never filled");
    let (_, waiting) = &refused[0];
    let page = app
        .get(&format!("/after-checkout?session_id={waiting}"))
        .await;
    assert_eq!(page.status(), 503);

    std::fs::remove_file(filler).expect("space freed");
    // Stripe's retries, once there is room again.
    for (n, session) in &refused {
        redeliver_until_stored(&app, &format!("evt_full_{n}"), session).await;
    }
    let every: Vec<_> = kept
        .iter()
        .chain(&refused)
        .map(|(_, s)| s.clone())
        .collect();
    for session in every.iter().chain([&before]) {
        app.wait_for(session, Status::Fulfilled).await;
    }
    app.drained().await;
    for session in every.iter().chain([&before]) {
        assert_eq!(
            app.effects(session).await,
            [("receipt".to_owned(), "done".to_owned())],
            "{session}"
        );
    }
    assert_intact(&path);
}
