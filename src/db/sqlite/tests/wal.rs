//! The WAL synced off the connection: when callers are told their work is durable.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;

use super::{Member, ONE_GROUP, group, marks, take_turn, take_turn_until};
use crate::db::sqlite::{Commit, Sqlite};

/// Each sync of the WAL, held until the test lets it go on.
struct Syncs {
    started: tokio::sync::mpsc::UnboundedReceiver<()>,
    results: std::sync::mpsc::Sender<std::io::Result<()>>,
}

impl Syncs {
    /// A sync that reports its start and waits (a minute at most) for its result.
    fn held() -> (Self, crate::db::sqlite::wal::Sync) {
        let (starts, started) = tokio::sync::mpsc::unbounded_channel();
        let (results, outcomes) = std::sync::mpsc::channel();
        let sync = Box::new(move || {
            let _ = starts.send(());
            outcomes
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| Err(std::io::Error::other("the test let no sync go on")))
        });
        (Self { started, results }, sync)
    }

    async fn started(&mut self) {
        tokio::time::timeout(Duration::from_secs(60), self.started.recv())
            .await
            .expect("a sync starts")
            .expect("the syncer runs");
    }

    fn ends(&self, result: std::io::Result<()>) {
        self.results.send(result).expect("the sync waits");
    }
}

/// Gives `task` a minute to finish.
async fn answer<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the caller is answered")
        .expect("the caller returns")
}

/// A database in `dir`, with a table of marks, whose WAL syncs are held by the test.
fn with_held_syncs(dir: &tempfile::TempDir) -> (Syncs, Arc<Sqlite>) {
    let path = dir.path().join("group.db");
    let path = path.to_str().expect("a UTF-8 path");
    let mut conn = crate::db::open_sqlite(path).expect("SQLite opens");
    conn.batch_execute("CREATE TABLE marks (n INTEGER PRIMARY KEY NOT NULL)")
        .expect("the table is created");
    let (syncs, sync) = Syncs::held();
    let sqlite =
        Sqlite::with_sync(conn, path, ONE_GROUP, Some(sync)).expect("SQLite is taken over");
    (syncs, sqlite)
}

#[tokio::test]
async fn a_caller_is_told_its_work_is_durable_only_after_a_wal_sync_begun_after_its_commit() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut syncs, sqlite) = with_held_syncs(&dir);
    let turn = |member, wanted| {
        let sqlite = Arc::clone(&sqlite);
        tokio::spawn(async move { take_turn_until(&sqlite, member, wanted).await })
    };

    let first = turn(Member::Inserts(1), Commit::Durable);
    syncs.started().await;
    // Committed while the first sync runs: written at once, durable only after the next.
    let second = turn(Member::Inserts(2), Commit::Durable);
    let written = answer(turn(Member::Inserts(3), Commit::Written)).await;
    assert!(written.is_ok(), "{written:?}");
    assert_eq!(marks(&sqlite).await, BTreeSet::from([1, 2, 3]));
    assert!(!first.is_finished(), "durable before its WAL was synced");

    syncs.ends(Ok(()));
    let first = answer(first).await;
    assert!(first.is_ok(), "{first:?}");
    syncs.started().await;
    assert!(
        !second.is_finished(),
        "durable through a sync that began before its commit"
    );
    syncs.ends(Ok(()));
    let second = answer(second).await;
    assert!(second.is_ok(), "{second:?}");

    // A sync that fails is never trusted again: what waited for it is told, and the
    // connection takes no more turns.
    let third = turn(Member::Inserts(4), Commit::Durable);
    syncs.started().await;
    syncs.ends(Err(std::io::Error::other("the disk failed")));
    let third = answer(third).await;
    assert!(
        third
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("not known to be on the disk")),
        "{third:?}"
    );
    let later = take_turn(&sqlite, Member::Inserts(5)).await;
    assert!(
        later
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("until fulfilld is restarted")),
        "{later:?}"
    );
}

/// Done marks wait only for their commit: their groups cost no sync, and the next sync
/// that work waiting for the disk asks for covers them.
#[tokio::test]
async fn groups_that_wait_only_for_their_commit_are_synced_by_the_next_group_that_waits_for_the_disk()
 {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut syncs, sqlite) = with_held_syncs(&dir);
    let turn = |member, wanted| {
        let sqlite = Arc::clone(&sqlite);
        tokio::spawn(async move { take_turn_until(&sqlite, member, wanted).await })
    };

    for n in 1..=3 {
        let written = answer(turn(Member::Inserts(n), Commit::Written)).await;
        assert!(written.is_ok(), "{written:?}");
    }
    let durable = turn(Member::Inserts(4), Commit::Durable);
    // Had the groups before it been handed to the syncer, this first sync would be theirs,
    // and the last group would wait for another.
    syncs.started().await;
    syncs.ends(Ok(()));
    let durable = answer(durable).await;
    assert!(durable.is_ok(), "{durable:?}");
    assert!(
        syncs.started.try_recv().is_err(),
        "a sync for groups that did not wait for one"
    );
    assert_eq!(marks(&sqlite).await, BTreeSet::from([1, 2, 3, 4]));
}

/// The WAL synced is the one SQLite writes, wherever the path given leads.
#[tokio::test]
async fn the_wal_synced_is_the_one_beside_the_database_a_link_points_to() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let real = dir.path().join("real.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).expect("a symbolic link");
    let link = link.to_str().expect("a UTF-8 path");
    let mut conn = crate::db::open_sqlite(link).expect("SQLite opens");
    conn.batch_execute("CREATE TABLE marks (n INTEGER PRIMARY KEY NOT NULL)")
        .expect("the table is created");
    let sqlite = Sqlite::with_limits(conn, link, ONE_GROUP).expect("SQLite is taken over");

    let kept = group(&sqlite, &[Member::Inserts(1)]).await;
    assert_eq!(kept, [Ok(())], "synced");
    let wal = dir.path().join("real.db-wal");
    assert!(
        wal.exists(),
        "SQLite writes its WAL beside the file linked to"
    );
    assert!(!dir.path().join("link.db-wal").exists());
}
