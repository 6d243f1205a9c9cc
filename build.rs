//! Names the git revision the binary is built from, for `fulfilld --version`.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            // Reading only: git must not rewrite the index this script watches.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|text| text.trim().to_owned())
    };
    let revision =
        git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "revision unknown".to_owned());
    println!("cargo:rustc-env=FULFILLD_REVISION={revision}");
    // A new commit or a checkout changes HEAD, the ref it names, or the packed refs;
    // only files that exist are watched, or cargo would run this script every build.
    let mut watched = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        watched.push(format!("{git_dir}/HEAD"));
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(format!("{git_dir}/{head}"));
        }
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        watched.push(format!("{common}/packed-refs"));
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(format!("{common}/{head}"));
        }
    }
    watched.retain(|path| std::path::Path::new(path).exists());
    watched.dedup();
    for path in &watched {
        println!("cargo:rerun-if-changed={path}");
    }
    if watched.is_empty() {
        println!("cargo:rerun-if-changed=build.rs");
    }
}
