//! Replicas as one engine: several serving processes on one database share one Stripe
//! budget, and one of them at a time runs the scheduled reconcile.
//!
//! Every replica writes a heartbeat to the `replicas` table each second and paces its
//! Stripe calls at `STRIPE_MAX_RPS` divided by the replicas seen in the last
//! [`ALIVE_FOR`]: a replica that joins takes its share within a heartbeat, and one that
//! dies (even by `kill -9`) gives its share back once its heartbeat is that old. A replica
//! that stops cleanly removes its row and gives its share back at once.
//!
//! On PostgreSQL the leader is whichever replica holds a session-level advisory lock, on
//! a connection of its own: the database itself guarantees there is at most one, and
//! releases the lock when the leader's connection ends, however the leader ended. On
//! SQLite, a database of one machine, the longest-running replica alive leads.

use std::time::Duration;

use diesel::sql_types::{BigInt, Bool, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db::{Database, DatabaseUrl};
use crate::stripe::Pacer;

/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica not heard from for this long is gone, and its share is taken back.
pub const ALIVE_FOR: Duration = Duration::from_secs(3);
/// Rows of replicas gone for this long are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// The leader's advisory lock: "fulf".
pub const LEADER_LOCK: i64 = 0x6675_6c66;
/// The longest a check of the leader's connection may take before leadership is dropped.
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a replica knows of the deployment, as of its latest heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// This replica's name.
    pub replica: String,
    /// Replicas alive, this one included.
    pub alive: usize,
    /// The replica that runs reconcile, when one does.
    pub leader: Option<String>,
}

/// This process's membership of the deployment; dropped or [`Replica::leave`]s on stop.
pub struct Replica {
    name: String,
    db: Database,
    standing: watch::Receiver<Standing>,
    leading: watch::Receiver<bool>,
    stop: CancellationToken,
}

impl Replica {
    /// Joins the replicas on `db`: one heartbeat now (so the pacer's share is right before
    /// any call), then one every [`HEARTBEAT`] until [`Replica::leave`].
    pub async fn join(
        db: &Database,
        url: &DatabaseUrl,
        pacer: Pacer,
        budget: u32,
    ) -> anyhow::Result<Self> {
        let name = name();
        let alive = db.heartbeat(&name, ALIVE_FOR).await?;
        pacer.set_rate(share(budget, alive.len()));
        let (standing_tx, standing) = watch::channel(Standing {
            replica: name.clone(),
            alive: alive.len(),
            leader: None,
        });
        let (leading_tx, leading) = watch::channel(false);
        let stop = CancellationToken::new();
        let heart = Heart {
            name: name.clone(),
            db: db.clone(),
            url: url.clone(),
            pacer,
            budget,
            lock: None,
            standing: standing_tx,
            leading: leading_tx,
        };
        tokio::spawn(heart.beat(stop.clone()));
        tracing::info!(replica = %name, replicas = alive.len(), "joined the replicas");
        Ok(Self {
            name,
            db: db.clone(),
            standing,
            leading,
            stop,
        })
    }

    /// What this replica knows of the deployment, updated each heartbeat.
    pub fn standings(&self) -> watch::Receiver<Standing> {
        self.standing.clone()
    }

    /// True while this replica leads; changes as leadership comes and goes.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops the heartbeat, gives up leadership, and removes this replica, so the others
    /// take its share at their next heartbeat.
    pub async fn leave(self) {
        self.stop.cancel();
        if let Err(error) = self.db.leave(&self.name, FORGET_AFTER).await {
            tracing::warn!(error = %format!("{error:#}"), "could not leave the replicas; the others notice in a few seconds");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `hostname-pid`: unique on a machine, and telling which machine in a deployment.
fn name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    let host = if host.is_empty() { "fulfilld" } else { &host };
    format!("{host}-{}", std::process::id())
}

/// This replica's calls per second: an equal share of the deployment's budget.
fn share(budget: u32, alive: usize) -> f64 {
    f64::from(budget) / alive.max(1) as f64
}

/// The heartbeat task's state.
struct Heart {
    name: String,
    db: Database,
    url: DatabaseUrl,
    pacer: Pacer,
    budget: u32,
    /// PostgreSQL: the connection holding the leader's lock, while this replica leads.
    lock: Option<AsyncPgConnection>,
    standing: watch::Sender<Standing>,
    leading: watch::Sender<bool>,
}

impl Heart {
    async fn beat(mut self, stop: CancellationToken) {
        let mut every = tokio::time::interval(HEARTBEAT);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            let alive = match self.db.heartbeat(&self.name, ALIVE_FOR).await {
                Ok(alive) => alive,
                Err(error) => {
                    // The share stays as it was: the others cannot see this one either,
                    // and will not count it after ALIVE_FOR; nor can it reach Stripe's
                    // work without the database.
                    tracing::warn!(error = %format!("{error:#}"), "replica heartbeat failed");
                    continue;
                }
            };
            self.pacer.set_rate(share(self.budget, alive.len()));
            let leader = match self.url {
                DatabaseUrl::Postgres(_) => self.lead_by_lock().await,
                DatabaseUrl::Sqlite(_) => alive.first().cloned(),
            };
            let leads = leader.as_deref() == Some(self.name.as_str());
            self.leading.send_if_modified(|was| {
                let changed = *was != leads;
                if changed {
                    tracing::info!(replica = %self.name, leads, "reconcile leadership changed");
                }
                *was = leads;
                changed
            });
            self.standing.send_replace(Standing {
                replica: self.name.clone(),
                alive: alive.len(),
                leader,
            });
        }
        // Dropping the connection releases the lock.
        self.lock = None;
        self.leading.send_replace(false);
    }

    /// Keeps or tries to take the advisory lock; returns who holds it.
    async fn lead_by_lock(&mut self) -> Option<String> {
        use diesel_async::RunQueryDsl;
        if let Some(conn) = &mut self.lock {
            let check = sql_query("SELECT 1").execute(conn);
            if !matches!(
                tokio::time::timeout(LOCK_CHECK_TIMEOUT, check).await,
                Ok(Ok(_))
            ) {
                tracing::warn!("the leader's connection failed; leadership given up");
                self.lock = None;
            }
        }
        if self.lock.is_none() {
            self.lock = self.try_lock().await;
        }
        if self.lock.is_some() {
            return Some(self.name.clone());
        }
        match self.db.advisory_lock_holder(LEADER_LOCK).await {
            Ok(holder) => holder,
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "could not tell who leads");
                None
            }
        }
    }

    /// A connection of its own holding the leader's lock, if no other replica holds it.
    async fn try_lock(&self) -> Option<AsyncPgConnection> {
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct Locked {
            #[diesel(sql_type = Bool)]
            locked: bool,
        }
        let DatabaseUrl::Postgres(url) = &self.url else {
            return None;
        };
        let attempt = async {
            let mut conn = AsyncPgConnection::establish(url).await?;
            // Named after the replica, so every replica can tell who holds the lock.
            sql_query("SELECT set_config('application_name', $1, false)")
                .bind::<Text, _>(&self.name)
                .execute(&mut conn)
                .await?;
            let locked = sql_query("SELECT pg_try_advisory_lock($1) AS locked")
                .bind::<BigInt, _>(LEADER_LOCK)
                .get_result::<Locked>(&mut conn)
                .await?;
            Ok::<_, anyhow::Error>(locked.locked.then_some(conn))
        };
        match tokio::time::timeout(LOCK_CHECK_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                tracing::debug!(error = %format!("{error:#}"), "could not try the leader's lock");
                None
            }
            Err(_) => None,
        }
    }
}
