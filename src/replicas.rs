//! Replicas as one engine: several serving processes on one database share one Stripe
//! budget, and one of them at a time runs the scheduled reconcile.
//!
//! Every replica writes a heartbeat to the `replicas` table each second and paces its
//! Stripe calls at `STRIPE_MAX_RPS` divided by the replicas seen in the last
//! [`ALIVE_FOR`]: a replica that joins takes its share within a heartbeat, and one that
//! dies (even by `kill -9`) gives its share back once its heartbeat is that old. A replica
//! that stops cleanly removes its row and gives its share back at once.
//!
//! A command that calls Stripe (`fulfilld reconcile`, `fulfill`, `events replay`,
//! `sessions refund`) joins the same way as a [`Role::Command`] for as long as it runs:
//! it takes an equal share, never leads, and is not counted as a replica. Alone on its
//! database, it has the whole budget.
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
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::replicas::Member;
use crate::db::{Database, DatabaseUrl};
use crate::stripe::Pacer;

/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica not heard from for this long is gone, and its share is taken back.
pub const ALIVE_FOR: Duration = Duration::from_secs(3);
/// Rows of replicas gone for this long are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// The longest a stopping replica spends saying so.
const LEAVE_WITHIN: Duration = Duration::from_secs(2);
/// The leader's advisory lock: "fulf".
pub const LEADER_LOCK: i64 = 0x6675_6c66;
/// The longest a check of the leader's connection may take before leadership is dropped.
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a member of the deployment does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `fulfilld serve`: a replica, which may lead.
    Replica,
    /// A command that calls Stripe: it shares the budget while it runs, and never leads.
    Command,
}

/// What a replica knows of the deployment, as of its latest heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// This replica's name.
    pub replica: String,
    /// Replicas alive, this one included.
    pub alive: usize,
    /// Commands sharing the Stripe budget with the replicas now.
    pub commands: usize,
    /// The replica that runs reconcile, when one does.
    pub leader: Option<String>,
}

/// This process's membership of the deployment; [`Replica::leave`] on stop.
pub struct Replica {
    name: String,
    db: Database,
    standing: watch::Receiver<Standing>,
    leading: watch::Receiver<bool>,
    stop: CancellationToken,
    heart: JoinHandle<()>,
}

impl Replica {
    /// Joins the replicas on `db` as `role` with one heartbeat now, then one every
    /// [`HEARTBEAT`] until [`Replica::leave`]. A member alone takes the whole budget at
    /// once; one that joins others waits a heartbeat at the slowest pace, until they have
    /// seen it and made room.
    pub async fn join(
        db: &Database,
        url: &DatabaseUrl,
        pacer: Pacer,
        budget: u32,
        role: Role,
    ) -> anyhow::Result<Self> {
        let name = name();
        let alive = db
            .heartbeat(&name, role == Role::Replica, ALIVE_FOR)
            .await?;
        pacer.set_rate(match alive.len() {
            1 => share(budget, 1),
            _ => 0.0,
        });
        let (standing_tx, standing) = watch::channel(standing(&name, &alive, None));
        let (leading_tx, leading) = watch::channel(false);
        let stop = CancellationToken::new();
        let heart = Heart {
            name: name.clone(),
            db: db.clone(),
            url: url.clone(),
            pacer,
            budget,
            role,
            lock: None,
            leads: false,
            standing: standing_tx,
            leading: leading_tx,
        };
        let heart = tokio::spawn(heart.beat(stop.clone()));
        tracing::info!(replica = %name, ?role, members = alive.len(), "joined the replicas");
        Ok(Self {
            name,
            db: db.clone(),
            standing,
            leading,
            stop,
            heart,
        })
    }

    /// This replica's name, unique among the replicas.
    pub fn name(&self) -> &str {
        &self.name
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
        // No heartbeat in flight may write the row back after it is removed.
        let _ = self.heart.await;
        // Bounded: an orchestrator kills a process that takes too long to stop, and the
        // others notice a replica gone in a few seconds anyway.
        match tokio::time::timeout(LEAVE_WITHIN, self.db.leave(&self.name, FORGET_AFTER)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %format!("{error:#}"), "could not leave the replicas; the others notice in a few seconds")
            }
            Err(_) => tracing::warn!(
                "leaving the replicas took too long; the others notice in a few seconds"
            ),
        }
    }
}

/// `hostname-pid-random`: unique even where every container is pid 1 on one hostname,
/// and telling which machine in a deployment. Short enough for PostgreSQL's 63-byte
/// `application_name`.
fn name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(40)
        .collect();
    let host = if host.is_empty() { "fulfilld" } else { &host };
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// This member's calls per second: an equal share of the deployment's budget.
fn share(budget: u32, alive: usize) -> f64 {
    f64::from(budget) / alive.max(1) as f64
}

/// What `replica` knows, having heard from the members `alive`.
fn standing(replica: &str, alive: &[Member], leader: Option<String>) -> Standing {
    let replicas = alive.iter().filter(|member| member.serves).count();
    Standing {
        replica: replica.to_owned(),
        alive: replicas,
        commands: alive.len() - replicas,
        leader,
    }
}

/// The heartbeat task's state.
struct Heart {
    name: String,
    db: Database,
    url: DatabaseUrl,
    pacer: Pacer,
    budget: u32,
    role: Role,
    /// PostgreSQL: this replica's connection for the leader's lock, kept between tries.
    lock: Option<AsyncPgConnection>,
    /// Whether this replica holds the lock on that connection.
    leads: bool,
    standing: watch::Sender<Standing>,
    leading: watch::Sender<bool>,
}

impl Heart {
    async fn beat(mut self, stop: CancellationToken) {
        let mut every = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_beat = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            let beat = self
                .db
                .heartbeat(&self.name, self.role == Role::Replica, ALIVE_FOR);
            let alive = match tokio::time::timeout(HEARTBEAT, beat).await {
                Ok(Ok(alive)) => alive,
                failed => {
                    if let Ok(Err(error)) = failed {
                        tracing::warn!(error = %format!("{error:#}"), "replica heartbeat failed");
                    }
                    // Unheard, this replica will soon not be counted: the others take
                    // its share, and one of them may take the lead. It gives up both
                    // first.
                    if last_beat.elapsed() + HEARTBEAT >= ALIVE_FOR {
                        self.pacer.set_rate(0.0);
                        self.release();
                        self.announce(None);
                    }
                    continue;
                }
            };
            last_beat = Instant::now();
            self.pacer.set_rate(share(self.budget, alive.len()));
            let leader = match (self.role, &self.url) {
                // A command only shares the budget; it never leads.
                (Role::Command, _) => None,
                (Role::Replica, DatabaseUrl::Postgres(_)) => self.lead_by_lock().await,
                (Role::Replica, DatabaseUrl::Sqlite(_)) => alive
                    .iter()
                    .find(|member| member.serves)
                    .map(|member| member.id.clone()),
            };
            self.announce(leader.as_deref());
            self.standing
                .send_replace(standing(&self.name, &alive, leader));
        }
        self.release();
        self.leading.send_replace(false);
    }

    /// Tells the reconcile schedule whether this replica leads now.
    fn announce(&self, leader: Option<&str>) {
        let leads = match self.url {
            // Only the lock says so: a name could be shared.
            DatabaseUrl::Postgres(_) => self.leads,
            DatabaseUrl::Sqlite(_) => leader == Some(self.name.as_str()),
        };
        self.leading.send_if_modified(|was| {
            let changed = *was != leads;
            if changed {
                tracing::info!(replica = %self.name, leads, "reconcile leadership changed");
            }
            *was = leads;
            changed
        });
    }

    /// Drops the lock's connection, and with it the lock.
    fn release(&mut self) {
        self.lock = None;
        self.leads = false;
    }

    /// Keeps or tries to take the advisory lock; returns who holds it.
    async fn lead_by_lock(&mut self) -> Option<String> {
        if let Err(error) = tokio::time::timeout(LOCK_CHECK_TIMEOUT, self.try_lock()).await {
            tracing::warn!(error = %error, "the leader's lock did not answer in time");
            self.release();
        }
        if self.leads {
            return Some(self.name.clone());
        }
        let holder = self.db.advisory_lock_holder(LEADER_LOCK);
        match tokio::time::timeout(LOCK_CHECK_TIMEOUT, holder).await {
            Ok(Ok(holder)) => holder,
            Ok(Err(error)) => {
                tracing::debug!(error = %format!("{error:#}"), "could not tell who leads");
                None
            }
            Err(_) => None,
        }
    }

    /// Checks that the lock is still held (its connection answers), or tries to take it.
    async fn try_lock(&mut self) {
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct Locked {
            #[diesel(sql_type = Bool)]
            locked: bool,
        }
        let DatabaseUrl::Postgres(url) = &self.url else {
            return;
        };
        if self.lock.is_none() {
            match connect_for_lock(url, &self.name).await {
                Ok(conn) => self.lock = Some(conn),
                Err(error) => {
                    tracing::debug!(error = %format!("{error:#}"), "no connection for the leader's lock");
                    return;
                }
            }
        }
        let Some(conn) = &mut self.lock else {
            return;
        };
        // Taking a lock this session holds already succeeds again (and stacks, which is
        // harmless: the session's end releases every hold). Either way the connection
        // answered, so the lock is still this session's.
        let answer = sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<BigInt, _>(LEADER_LOCK)
            .get_result::<Locked>(conn)
            .await;
        match answer {
            Ok(locked) => self.leads = locked.locked,
            Err(error) => {
                tracing::warn!(error = %error, "the leader's lock connection failed");
                self.release();
            }
        }
    }
}

/// A connection of its own for the leader's lock, named after the replica (so every
/// replica can tell who holds the lock), which the server ends if the replica stops
/// talking: a frozen or cut-off leader loses the lock within seconds, not when TCP
/// gives up hours later.
async fn connect_for_lock(url: &str, name: &str) -> anyhow::Result<AsyncPgConnection> {
    use diesel_async::RunQueryDsl;
    let mut conn = AsyncPgConnection::establish(url).await?;
    sql_query("SELECT set_config('application_name', $1, false)")
        .bind::<Text, _>(name)
        .execute(&mut conn)
        .await?;
    for (setting, value) in [
        ("tcp_keepalives_idle", "5"),
        ("tcp_keepalives_interval", "1"),
        ("tcp_keepalives_count", "3"),
        // PostgreSQL 14 and later; the replica asks every second.
        ("idle_session_timeout", "10s"),
    ] {
        if let Err(error) = sql_query("SELECT set_config($1, $2, false)")
            .bind::<Text, _>(setting)
            .bind::<Text, _>(value)
            .execute(&mut conn)
            .await
        {
            tracing::debug!(setting, error = %error, "setting not available on this server");
        }
    }
    Ok(conn)
}
