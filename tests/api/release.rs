//! What operators and their tooling ask of the binary itself: its version, and whether a
//! running server is ready.

use crate::helpers::{backends, free_port, spawn_app};

async fn fulfilld(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .await
        .expect("fulfilld runs")
}

#[actix_web::test]
async fn the_version_names_the_git_revision_it_was_built_from() {
    let output = fulfilld(&["--version"]).await;
    assert!(output.status.success());
    let version = String::from_utf8_lossy(&output.stdout).into_owned();
    let revision = version
        .split_once('(')
        .and_then(|(_, rest)| rest.split([')', ',']).next())
        .unwrap_or_default();
    assert!(
        version.starts_with(&format!("fulfilld {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    // Built in a clone, the revision is HEAD's, abbreviated; from a source tarball it
    // says it is unknown.
    let cloned = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.git")).exists();
    match cloned {
        true => assert!(
            revision.len() == 12 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
            "{version}"
        ),
        false => assert_eq!(revision, "revision unknown", "{version}"),
    }
}

#[actix_web::test]
async fn healthcheck_exits_0_for_a_ready_server_and_1_otherwise() {
    for backend in backends() {
        let app = spawn_app(&backend).await;
        let ready = fulfilld(&["healthcheck", "--url", &format!("{}/readyz", app.address)]).await;
        assert!(ready.status.success(), "{ready:?}");
        assert_eq!(String::from_utf8_lossy(&ready.stdout), "ready\n");

        // Nothing listening, and a server that answers something else: not ready.
        let nobody = format!("http://127.0.0.1:{}/readyz", free_port());
        let wrong = format!("{}/no-such-probe", app.address);
        for url in [nobody, wrong] {
            let refused = fulfilld(&["healthcheck", "--url", &url]).await;
            assert_eq!(refused.status.code(), Some(1), "{refused:?}");
            let said = String::from_utf8_lossy(&refused.stderr);
            assert!(said.contains("not ready"), "{said}");
        }
    }
}
