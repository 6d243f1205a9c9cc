//! `fulfilld bench chaos`: replicas dying at random, not at chosen points.
//!
//! `--replicas` servers share one PostgreSQL. Every session's event is delivered twice,
//! each time to a replica picked at random, and sent again elsewhere when that one does
//! not answer. Meanwhile one replica at a time is killed with SIGKILL and started again on
//! its port, at random moments. Each session also buys a mug, which is shipped. Then every
//! exactly-once check runs (each session fulfilled once, every shipment under one
//! idempotency key, the stock exact), allowing one receipt sent twice per kill: the SMTP
//! sync gap, where a mail server took a message whose `250`, or its recording, died with
//! the process, and which a process lets one message at a time into.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::load::progress;
use super::report::{Chaos, Report};
use super::rig::{Place, Rig};
use super::{BenchArgs, Scenario};

/// The longest and shortest quiet between two kills.
const BETWEEN_KILLS: (Duration, Duration) =
    (Duration::from_millis(300), Duration::from_millis(1500));

pub async fn chaos(args: &BenchArgs, place: &Place, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        place.postgres.is_some(),
        "replicas share PostgreSQL: run it with --database-url postgres://…"
    );
    let servers = args.replicas.max(2);
    let count = args.sessions_for(Scenario::Chaos);
    let mut rig = Rig::start_shipping(place, "chaos", count, servers).await?;
    let bar = progress("delivered", count);
    let started = Instant::now();
    let delivered = Arc::new(AtomicBool::new(false));
    let deliveries = {
        let (deliverer, sessions) = (rig.deliverer.clone(), rig.sessions.clone());
        let (delivered, bar) = (Arc::clone(&delivered), bar.clone());
        let connections = args.connections;
        tokio::spawn(async move {
            let sent_again = deliverer.at_random(&sessions, connections, 2, &bar).await;
            delivered.store(true, Ordering::SeqCst);
            sent_again
        })
    };
    // Kills until every event is acknowledged somewhere, and once more after, so that
    // some die while only fulfilments are under way.
    let mut kills = 0;
    loop {
        let (shortest, longest) = BETWEEN_KILLS;
        let quiet = shortest + (longest - shortest).mul_f64(fastrand::f64());
        tokio::time::sleep(quiet).await;
        let last = delivered.load(Ordering::SeqCst);
        kills += 1;
        rig.kill_and_restart(place, fastrand::usize(..servers), kills)
            .await?;
        if last {
            break;
        }
    }
    let sent_again = deliveries.await??;
    bar.finish_and_clear();
    // The sync gap: a message the mail server took whose `250` died with its process, or
    // whose recording did. A process lets one message at a time into it.
    let (drained, twice) = rig.drain_allowing(place, kills).await?;
    report.chaos = Some(Chaos {
        servers,
        sessions: count,
        kills,
        sent_again,
        receipts_twice: twice,
        stripe_calls_per_session: drained.stripe_calls as f64 / count as f64,
        took: drained.last_receipt.saturating_duration_since(started),
    });
    Ok(())
}
