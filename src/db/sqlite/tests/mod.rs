//! Group commit when a member of the group goes wrong.

mod wal;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection, TransactionManager};
use tempfile::TempDir;

use super::{Commit, Connection, Lane, Limits, Manager, Sqlite};

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
    /// Inserts `n` in a transaction it never ends, as a cancelled caller does.
    Abandons(i32),
    /// Binds a value whose conversion panics, with the connection's mutex held.
    PanicsBinding,
    /// Panics in work run on the connection.
    PanicsRunning,
    /// Ends the whole transaction behind diesel's back, as SQLite itself does after
    /// some disk and memory errors, then opens a transaction it abandons.
    EndsTheTransaction,
    /// Inserts [`REFUSED`] in a transaction of its own: the trigger's `RAISE(ROLLBACK)`
    /// ends the whole transaction, and diesel's rollback of its savepoint then fails.
    RaisesRollback,
    /// Inserts [`REFUSED`] in a plain statement, outside any transaction of its own:
    /// SQLite ends the whole transaction and diesel does not notice.
    RaisesRollbackPlainly,
    /// As `RaisesRollbackPlainly`, then inserts `n` as if nothing had happened: SQLite
    /// commits that insert on its own, outside any group.
    RaisesRollbackAndGoesOn(i32),
}

/// The mark whose insert a trigger answers with `RAISE(ROLLBACK)`.
const REFUSED: i32 = 13;

struct Database {
    sqlite: Arc<Sqlite>,
    _dir: TempDir,
}

fn database() -> Database {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("group.db");
    let path = path.to_str().expect("a UTF-8 path");
    let mut conn = crate::db::open_sqlite(path).expect("SQLite opens");
    conn.batch_execute(&format!(
        "CREATE TABLE marks (n INTEGER PRIMARY KEY NOT NULL);
         CREATE TRIGGER refuse BEFORE INSERT ON marks WHEN NEW.n = {REFUSED}
         BEGIN SELECT RAISE(ROLLBACK, 'refused'); END;"
    ))
    .expect("the table is created");
    Database {
        sqlite: Sqlite::with_limits(conn, path, ONE_GROUP).expect("SQLite is taken over"),
        _dir: dir,
    }
}

/// Runs `members` as one group, in order, and returns what each caller was told; fails
/// the test if that takes a minute (a group nobody commits, a stuck connection).
async fn group(sqlite: &Arc<Sqlite>, members: &[Member]) -> Vec<Result<(), String>> {
    tokio::time::timeout(Duration::from_secs(60), run_group(sqlite, members))
        .await
        .expect("every member of the group is answered")
}

async fn run_group(sqlite: &Arc<Sqlite>, members: &[Member]) -> Vec<Result<(), String>> {
    // The group opens on this turn; the members queue behind it, so none of them sees
    // an empty queue (which commits) before the last.
    let opener = sqlite.turn(Lane::Acknowledgement).await.expect("a turn");
    let tasks: Vec<_> = members
        .iter()
        .map(|&member| {
            let sqlite = Arc::clone(sqlite);
            tokio::spawn(async move { take_turn(&sqlite, member).await })
        })
        .collect();
    while sqlite.queue.waiting() < members.len() {
        tokio::task::yield_now().await;
    }
    // Its group commits with the last member's turn.
    drop(opener);
    let mut told = Vec::new();
    for task in tasks {
        told.push(match task.await {
            Ok(result) => result.map_err(|error| format!("{error:#}")),
            Err(error) => Err(format!("the caller panicked: {error}")),
        });
    }
    told
}

async fn take_turn(sqlite: &Sqlite, member: Member) -> anyhow::Result<()> {
    take_turn_until(sqlite, member, Commit::Durable).await
}

async fn take_turn_until(sqlite: &Sqlite, member: Member, wanted: Commit) -> anyhow::Result<()> {
    let mut turn = sqlite.turn(Lane::Acknowledgement).await?;
    let conn = turn.connection();
    let worked = match member {
        Member::Inserts(n) => conn.transaction(async |conn| insert(conn, n).await).await,
        Member::Fails(n) => {
            conn.transaction(async |conn| {
                insert(conn, n).await?;
                insert(conn, n).await
            })
            .await
        }
        Member::Abandons(n) => {
            Manager::begin_transaction(conn).await?;
            insert(conn, n).await
        }
        Member::PanicsBinding => diesel::sql_query("SELECT ?")
            .bind::<Integer, _>(Boom)
            .execute(conn)
            .await
            .map(drop),
        Member::PanicsRunning => {
            conn.spawn_blocking(|_| -> diesel::QueryResult<()> { panic!("this work fails") })
                .await
        }
        Member::EndsTheTransaction => {
            conn.batch_execute("ROLLBACK").await?;
            Manager::begin_transaction(conn).await
        }
        Member::RaisesRollback => {
            conn.transaction(async |conn| insert(conn, REFUSED).await)
                .await
        }
        Member::RaisesRollbackPlainly => insert(conn, REFUSED).await,
        Member::RaisesRollbackAndGoesOn(n) => {
            let _ = insert(conn, REFUSED).await;
            insert(conn, n).await
        }
    };
    turn.ended(wanted).await?;
    Ok(worked?)
}

async fn insert(conn: &mut Connection, n: i32) -> diesel::QueryResult<()> {
    diesel::sql_query(format!("INSERT INTO marks (n) VALUES ({n})"))
        .execute(conn)
        .await
        .map(drop)
}

async fn marks(sqlite: &Sqlite) -> BTreeSet<i32> {
    #[derive(diesel::QueryableByName)]
    struct Mark {
        #[diesel(sql_type = Integer)]
        n: i32,
    }
    let mut turn = sqlite.turn(Lane::Background).await.expect("a turn");
    let rows = diesel::sql_query("SELECT n FROM marks")
        .load::<Mark>(turn.connection())
        .await
        .expect("the marks are read");
    turn.ended(Commit::Written).await.expect("the read ends");
    rows.into_iter().map(|row| row.n).collect()
}

#[derive(Debug)]
struct Boom;

impl ToSql<Integer, diesel::sqlite::Sqlite> for Boom {
    fn to_sql<'b>(&'b self, _: &mut Output<'b, '_, diesel::sqlite::Sqlite>) -> serialize::Result {
        panic!("this value cannot be written")
    }
}

#[tokio::test]
async fn a_failing_or_abandoned_turn_leaves_the_rest_of_its_group_committed() {
    let db = database();
    let told = group(
        &db.sqlite,
        &[
            Member::Inserts(1),
            Member::Fails(2),
            Member::Abandons(3),
            Member::Inserts(4),
        ],
    )
    .await;

    assert_eq!(told[0], Ok(()));
    assert!(told[1].is_err(), "the failing turn is told: {:?}", told[1]);
    assert!(
        told[2].is_err(),
        "the abandoned turn is told: {:?}",
        told[2]
    );
    assert_eq!(told[3], Ok(()));
    assert_eq!(marks(&db.sqlite).await, BTreeSet::from([1, 4]));
}

#[tokio::test]
async fn a_turn_that_panics_fails_alone_and_the_connection_works_on() {
    let db = database();
    let told = group(
        &db.sqlite,
        &[
            Member::Inserts(1),
            Member::PanicsBinding,
            Member::Inserts(3),
            Member::PanicsRunning,
            Member::Inserts(5),
        ],
    )
    .await;
    assert_eq!(told[0], Ok(()));
    assert!(told[1].is_err(), "{:?}", told[1]);
    assert_eq!(told[2], Ok(()));
    assert!(
        told[3]
            .as_ref()
            .is_err_and(|e| !e.contains("the caller panicked")),
        "work that panics on the connection is answered with an error: {:?}",
        told[3]
    );
    assert_eq!(told[4], Ok(()));

    let later = group(&db.sqlite, &[Member::Inserts(6)]).await;
    assert_eq!(later, [Ok(())]);
    assert_eq!(marks(&db.sqlite).await, BTreeSet::from([1, 3, 5, 6]));
}

#[tokio::test]
async fn a_transaction_sqlite_ended_by_itself_is_never_reported_committed() {
    let db = database();
    let told = group(
        &db.sqlite,
        &[
            Member::Inserts(1),
            Member::EndsTheTransaction,
            Member::Inserts(3),
        ],
    )
    .await;

    let marks = marks(&db.sqlite).await;
    for (member, n) in [(0, 1), (2, 3)] {
        if told[member].is_ok() {
            assert!(marks.contains(&n), "{n} was reported committed: {marks:?}");
        }
    }
    assert!(told[0].is_err(), "the lost insert is reported: {told:?}");
    assert_eq!(
        told[2],
        Ok(()),
        "the turn after the loss is not failed with it"
    );

    let later = group(&db.sqlite, &[Member::Inserts(4)]).await;
    assert_eq!(later, [Ok(())], "the connection works again");
}

/// Each way a trigger's `RAISE(ROLLBACK)` ends the transaction: the callers of the lost
/// group are told, and those who join after it lose nothing they were told was kept.
#[tokio::test]
async fn a_rollback_raised_inside_a_group_fails_only_the_work_it_undid() {
    for refused in [
        Member::RaisesRollback,
        Member::RaisesRollbackPlainly,
        Member::RaisesRollbackAndGoesOn(5),
    ] {
        let db = database();
        let told = group(
            &db.sqlite,
            &[
                Member::Inserts(1),
                refused,
                Member::Inserts(3),
                Member::Inserts(4),
            ],
        )
        .await;

        let marks = marks(&db.sqlite).await;
        assert!(
            told[0].is_err(),
            "{refused:?}: the undone insert is reported: {told:?}"
        );
        assert!(told[1].is_err(), "{refused:?}: {told:?}");
        assert_eq!(
            told[2..],
            [Ok(()), Ok(())],
            "{refused:?}: later turns are kept"
        );
        // What a turn did after the loss, SQLite committed on its own: its caller was
        // told it failed, never the reverse.
        let expected = match refused {
            Member::RaisesRollbackAndGoesOn(n) => BTreeSet::from([n, 3, 4]),
            _ => BTreeSet::from([3, 4]),
        };
        assert_eq!(marks, expected, "{refused:?}");
    }
}
