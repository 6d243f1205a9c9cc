//! Names the git revision the binary is built from, for `fulfilld --version`.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|text| text.trim().to_owned())
    };
    let revision = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(revision) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{revision}, modified"),
            _ => revision,
        },
        None => "revision unknown".to_owned(),
    };
    println!("cargo:rustc-env=FULFILLD_REVISION={revision}");
    // A new commit or a checkout changes HEAD or the ref it names.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head}");
        }
        println!("cargo:rerun-if-changed={git_dir}/index");
    }
}
