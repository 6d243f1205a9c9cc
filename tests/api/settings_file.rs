//! The settings file: under the environment and the command line, with the same names,
//! the same validation and the same one-line errors; `fulfilld config show` says where
//! each value came from and never shows a secret.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::helpers::free_port;

/// Runs fulfilld in `dir` with only the environment `env`.
async fn fulfilld(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .current_dir(dir)
        .env_clear()
        .env("RUST_LOG", "off")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("fulfilld runs")
}

/// The value and source `config show` printed for `name`.
fn shown<'a>(output: &'a str, name: &str) -> (&'a str, &'a str) {
    let line = output
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not shown: {output}"));
    let columns: Vec<&str> = line.split("  ").filter(|c| !c.trim().is_empty()).collect();
    (columns[1].trim(), columns[2].trim())
}

#[actix_web::test]
async fn the_file_sits_under_the_environment_and_the_command_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("fulfilld.toml"),
        "stripe_max_rps = 7\nLOG_FORMAT = \"json\"\nTRUSTED_PROXIES = [\"10.0.0.1\", \
         \"10.1.0.0/16\"]\nSTRIPE_SECRET_KEY = \"sk_test_from_the_file\"\n\
         EFFECT_MAX_ATTEMPTS = 9\nSEND_RECEIPTS = false\nCHECKOUT_UI = \"embedded\"\n\
         DATABASE_URL = \"postgres://shop:hunter2@db.internal/shop\"\n\
         ADMIN_TOKEN = \"an-admin-token-of-the-file\"\n",
    )
    .expect("file written");

    let output = fulfilld(
        dir.path(),
        &[("LOG_FORMAT", "text")],
        &["--effect-max-attempts", "4", "config", "show"],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let shown_all = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(shown(&shown_all, "STRIPE_MAX_RPS"), ("7", "fulfilld.toml"));
    assert_eq!(
        shown(&shown_all, "TRUSTED_PROXIES"),
        ("10.0.0.1,10.1.0.0/16", "fulfilld.toml")
    );
    assert_eq!(shown(&shown_all, "LOG_FORMAT"), ("text", "environment"));
    assert_eq!(
        shown(&shown_all, "EFFECT_MAX_ATTEMPTS"),
        ("4", "command line")
    );
    assert_eq!(
        shown(&shown_all, "STRIPE_SECRET_KEY"),
        ("(secret, set)", "fulfilld.toml")
    );
    assert_eq!(shown(&shown_all, "MAIL_DIR"), ("mail", "default"));
    // A switch and a choice, checked by their own parsers.
    assert_eq!(
        shown(&shown_all, "SEND_RECEIPTS"),
        ("false", "fulfilld.toml")
    );
    assert_eq!(
        shown(&shown_all, "CHECKOUT_UI"),
        ("embedded", "fulfilld.toml")
    );
    // The database's password is not shown either.
    assert_eq!(
        shown(&shown_all, "DATABASE_URL"),
        ("postgres://shop:(hidden)@db.internal/shop", "fulfilld.toml")
    );
    for secret in [
        "sk_test_from_the_file",
        "hunter2",
        "an-admin-token-of-the-file",
    ] {
        assert!(!shown_all.contains(secret), "{shown_all}");
    }

    // Help, with the file there, is help, and shows none of it.
    let help = fulfilld(dir.path(), &[], &["help"]).await;
    assert!(help.status.success(), "{help:?}");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Usage: fulfilld"), "{help}");
    assert!(!help.contains("an-admin-token-of-the-file"), "{help}");
}

#[actix_web::test]
async fn serve_takes_its_address_and_database_from_the_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = dir.path().join("shop.toml");
    std::fs::write(
        &config,
        format!(
            "BIND = \"127.0.0.1:{port}\"\nDATABASE_URL = \"sqlite://{}/shop.db\"\n",
            dir.path().display()
        ),
    )
    .expect("file written");
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .current_dir(dir.path())
        .env_clear()
        .env("RUST_LOG", "off")
        .args(["--config"])
        .arg(&config)
        .kill_on_drop(true)
        .spawn()
        .expect("fulfilld starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
        if ready.is_ok_and(|answer| answer.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "not serving on the file's BIND");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dir.path().join("shop.db").exists());
    server.kill().await.expect("stopped");
}

#[actix_web::test]
async fn a_bad_value_or_an_unknown_key_in_the_file_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (file, expected) in [
        (
            "STRIPE_MAX_RPS = \"lots\"\n",
            "configuration error: STRIPE_MAX_RPS (in fulfilld.toml): invalid value 'lots'",
        ),
        (
            "STRIPE_MAX_RPS = 5\nSTRIPE_MAX_RSP = 6\n",
            "configuration error: FULFILLD_CONFIG: fulfilld.toml: unknown setting STRIPE_MAX_RSP",
        ),
        (
            "STRIPE_MAX_RPS = {}\n",
            "configuration error: FULFILLD_CONFIG: fulfilld.toml: STRIPE_MAX_RPS: expected",
        ),
        (
            "STRIPE_MAX_RPS = \n",
            "configuration error: FULFILLD_CONFIG: fulfilld.toml:",
        ),
        (
            "stripe_max_rps = 5\nSTRIPE_MAX_RPS = 6\n",
            "configuration error: FULFILLD_CONFIG: fulfilld.toml: STRIPE_MAX_RPS is given twice",
        ),
        (
            "SEND_RECEIPTS = \"maybe\"\n",
            "configuration error: SEND_RECEIPTS (in fulfilld.toml): invalid value 'maybe'",
        ),
    ] {
        std::fs::write(dir.path().join("fulfilld.toml"), file).expect("file written");
        let output = fulfilld(dir.path(), &[], &["config", "show"]).await;
        assert_eq!(output.status.code(), Some(1), "{file}: {output:?}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(said.lines().count(), 1, "{file}: {said}");
        assert!(said.contains(expected), "{file}: {said}");
    }
}

#[actix_web::test]
async fn a_settings_file_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("fulfilld.toml");
    std::fs::write(
        &file,
        "STRIPE_API_BASE = \"https://stripe.attacker.example\"\n",
    )
    .expect("file written");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let output = fulfilld(dir.path(), &[], &["config", "show"]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("others may write it"), "{said}");
}
