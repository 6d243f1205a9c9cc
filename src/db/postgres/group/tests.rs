//! Group commit on PostgreSQL when a member of the group goes wrong. Each test needs
//! `TEST_DATABASE_URL` and makes a database of its own there; without it, it says so and
//! passes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::Integer;
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection, TransactionManager,
};
use tokio::runtime::Handle;

use super::{Groups, Limits, Manager};
use crate::db::postgres::Opener;

/// Limits under which a group ends only when no caller waits, however slow the machine.
const ONE_GROUP: Limits = Limits {
    turns: 1_000,
    age: Duration::from_secs(600),
    sweep: Duration::from_secs(600),
};

/// What one member of a group does with its turn.
#[derive(Debug, Clone, Copy)]
enum Member {
    /// Inserts `n` in a transaction of its own.
    Inserts(i32),
    /// Inserts `n`, then fails inside the same transaction.
    Fails(i32),
    /// Inserts `n`, then fails in a plain statement, which aborts PostgreSQL's whole
    /// transaction.
    FailsPlainly(i32),
    /// Inserts `n` in a transaction it never ends.
    LeavesOpen(i32),
    /// Inserts `n` in a plain statement, then goes away without ending its turn, as a
    /// cancelled caller does.
    GoesAway(i32),
    /// Inserts `n`, a row another connection has locked.
    MeetsALock(i32),
}

/// A database of the test's own on the server in `TEST_DATABASE_URL`, with a table of
/// marks; `None` when there is no server.
async fn database(test: &str) -> Option<String> {
    let Some(server) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("{test}: skipped, it needs PostgreSQL (TEST_DATABASE_URL)");
        return None;
    };
    let name = format!("fulfilld_test_{:016x}", fastrand::u64(..));
    let mut admin = AsyncPgConnection::establish(&server)
        .await
        .expect("TEST_DATABASE_URL accepts connections");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("the test database is created");
    let base = server.split('?').next().unwrap_or(&server);
    let (prefix, _) = base.rsplit_once('/').expect("the URL has a path");
    let url = format!("{prefix}/{name}");
    let mut conn = AsyncPgConnection::establish(&url)
        .await
        .expect("the test database accepts connections");
    conn.batch_execute("CREATE TABLE marks (n INTEGER PRIMARY KEY)")
        .await
        .expect("the table is created");
    Some(url)
}

fn groups(url: &str) -> Arc<Groups> {
    let opener = Opener {
        url: url.to_owned(),
        runtime: Handle::current(),
    };
    Groups::with_limits(opener, ONE_GROUP)
}

/// Runs `members` as one group, in order, and returns what each caller was told; fails
/// the test if that takes a minute.
async fn group(groups: &Arc<Groups>, members: &[Member]) -> Vec<Result<(), String>> {
    tokio::time::timeout(Duration::from_secs(60), async {
        // The group opens on this turn; the members queue behind it, so none of them
        // sees an empty queue (which commits) before the last.
        let opener = groups.turn().await.expect("a turn");
        let tasks: Vec<_> = members
            .iter()
            .map(|&member| {
                let groups = Arc::clone(groups);
                tokio::spawn(async move { take_turn(&groups, member).await })
            })
            .collect();
        while groups.queue.waiting() < members.len() {
            tokio::task::yield_now().await;
        }
        opener
            .durable()
            .await
            .expect("the opener's empty turn is kept");
        let mut told = Vec::new();
        for task in tasks {
            told.push(match task.await {
                Ok(result) => result.map_err(|error| format!("{error:#}")),
                Err(error) => Err(format!("the caller panicked: {error}")),
            });
        }
        told
    })
    .await
    .expect("every member of the group is answered")
}

async fn take_turn(groups: &Groups, member: Member) -> anyhow::Result<()> {
    let mut turn = groups.turn().await?;
    let conn = turn.connection();
    let worked = match member {
        Member::Inserts(n) | Member::MeetsALock(n) => {
            conn.transaction(async |conn| insert(conn, n).await).await
        }
        Member::Fails(n) => {
            conn.transaction(async |conn| {
                insert(conn, n).await?;
                insert(conn, n).await
            })
            .await
        }
        Member::FailsPlainly(n) => match insert(conn, n).await {
            Ok(()) => insert(conn, n).await,
            failed => failed,
        },
        Member::LeavesOpen(n) => {
            Manager::begin_transaction(conn).await?;
            insert(conn, n).await
        }
        Member::GoesAway(n) => {
            insert(conn, n).await?;
            drop(turn);
            anyhow::bail!("went away");
        }
    };
    turn.durable().await?;
    Ok(worked?)
}

async fn insert(conn: &mut AsyncPgConnection, n: i32) -> diesel::QueryResult<()> {
    diesel::sql_query("INSERT INTO marks (n) VALUES ($1)")
        .bind::<Integer, _>(n)
        .execute(conn)
        .await
        .map(drop)
}

async fn marks(url: &str) -> BTreeSet<i32> {
    #[derive(diesel::QueryableByName)]
    struct Mark {
        #[diesel(sql_type = Integer)]
        n: i32,
    }
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .expect("a connection");
    diesel::sql_query("SELECT n FROM marks")
        .load::<Mark>(&mut conn)
        .await
        .expect("the marks are read")
        .into_iter()
        .map(|row| row.n)
        .collect()
}

#[tokio::test]
async fn a_failing_or_abandoned_turn_leaves_the_rest_of_its_group_committed() {
    let Some(url) =
        database("a_failing_or_abandoned_turn_leaves_the_rest_of_its_group_committed").await
    else {
        return;
    };
    let groups = groups(&url);
    let told = group(
        &groups,
        &[
            Member::Inserts(1),
            Member::Fails(2),
            Member::Inserts(3),
            Member::FailsPlainly(4),
            Member::Inserts(5),
            Member::LeavesOpen(6),
            Member::Inserts(7),
        ],
    )
    .await;

    assert_eq!(told[0], Ok(()));
    for failed in [1, 3, 5] {
        assert!(told[failed].is_err(), "member {failed} is told: {told:?}");
    }
    for kept in [2, 4, 6] {
        assert_eq!(told[kept], Ok(()), "member {kept}: {told:?}");
    }
    assert_eq!(marks(&url).await, BTreeSet::from([1, 3, 5, 7]));

    let later = group(&groups, &[Member::Inserts(8)]).await;
    assert_eq!(later, [Ok(())], "the writer works on");
    assert!(marks(&url).await.contains(&8));
}

#[tokio::test]
async fn a_turn_whose_caller_goes_away_is_undone_and_the_rest_kept() {
    let Some(url) = database("a_turn_whose_caller_goes_away_is_undone_and_the_rest_kept").await
    else {
        return;
    };
    let groups = groups(&url);
    let told = group(
        &groups,
        &[Member::Inserts(1), Member::GoesAway(2), Member::Inserts(3)],
    )
    .await;

    assert_eq!(told[0], Ok(()), "{told:?}");
    assert!(told[1].is_err());
    assert_eq!(
        told[2],
        Ok(()),
        "the turn after it joins a new group: {told:?}"
    );
    assert_eq!(marks(&url).await, BTreeSet::from([1, 3]));
}

#[tokio::test]
async fn a_row_locked_elsewhere_fails_its_turn_at_the_lock_timeout_and_no_other() {
    let Some(url) =
        database("a_row_locked_elsewhere_fails_its_turn_at_the_lock_timeout_and_no_other").await
    else {
        return;
    };
    // Another session inserts 2 and keeps its transaction open: an insert of 2 waits.
    let mut holder = AsyncPgConnection::establish(&url)
        .await
        .expect("a connection");
    holder
        .batch_execute("BEGIN; INSERT INTO marks (n) VALUES (2)")
        .await
        .expect("the row is locked");

    let groups = groups(&url);
    let told = group(
        &groups,
        &[
            Member::Inserts(1),
            Member::MeetsALock(2),
            Member::Inserts(3),
        ],
    )
    .await;

    assert_eq!(told[0], Ok(()));
    assert!(
        told[1].as_ref().is_err_and(|e| e.contains("lock timeout")),
        "{told:?}"
    );
    assert_eq!(told[2], Ok(()));
    holder.batch_execute("ROLLBACK").await.expect("released");
    assert_eq!(marks(&url).await, BTreeSet::from([1, 3]));
}
