use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{BUSY_AT, BUSY_FOR, Pressure, busy_turns};

/// Event jobs that each hold their turn for `work`, started at once; returns the most
/// that ran at the same moment.
async fn most_at_once(pressure: &Arc<Pressure>, jobs: usize, work: Duration) -> usize {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..jobs {
        let (pressure, running, most) = (
            Arc::clone(pressure),
            Arc::clone(&running),
            Arc::clone(&most),
        );
        handles.push(tokio::spawn(async move {
            let _turn = pressure.turn().await;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(work).await;
            running.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for handle in handles {
        handle.await.expect("job ran");
    }
    most.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn while_the_lane_is_calm_every_job_runs_at_once() {
    let pressure = Arc::new(Pressure::default());
    let _arrivals: Vec<_> = (0..BUSY_AT)
        .map(|_| Pressure::arriving(&pressure))
        .collect();

    let jobs = 4 * busy_turns();
    let most = most_at_once(&pressure, jobs, Duration::from_millis(100)).await;

    assert_eq!(most, jobs);
}

#[tokio::test(start_paused = true)]
async fn while_the_lane_is_busy_jobs_take_turns_and_all_of_them_run() {
    let pressure = Arc::new(Pressure::default());
    let arrivals: Vec<_> = (0..=BUSY_AT)
        .map(|_| Pressure::arriving(&pressure))
        .collect();

    let started = tokio::time::Instant::now();
    let most = most_at_once(&pressure, 4 * busy_turns(), Duration::from_millis(100)).await;

    assert_eq!(most, busy_turns());
    assert!(started.elapsed() >= Duration::from_millis(400));
    drop(arrivals);
}

#[tokio::test(start_paused = true)]
async fn the_lane_counts_as_busy_for_a_moment_after_the_wave() {
    let pressure = Arc::new(Pressure::default());
    drop(
        (0..=BUSY_AT)
            .map(|_| Pressure::arriving(&pressure))
            .collect::<Vec<_>>(),
    );

    let jobs = 4 * busy_turns();
    let most = most_at_once(&pressure, jobs, Duration::from_millis(10)).await;
    assert_eq!(most, busy_turns(), "just after the wave");

    tokio::time::sleep(BUSY_FOR).await;
    let most = most_at_once(&pressure, jobs, Duration::from_millis(10)).await;
    assert_eq!(most, jobs, "once the moment has passed");
}

#[tokio::test(start_paused = true)]
async fn a_job_waiting_for_a_turn_runs_once_the_lane_is_calm() {
    let pressure = Arc::new(Pressure::default());
    let arrivals: Vec<_> = (0..=BUSY_AT)
        .map(|_| Pressure::arriving(&pressure))
        .collect();
    let held: Vec<_> = futures_util::future::join_all((0..busy_turns()).map(|_| pressure.turn()))
        .await
        .into_iter()
        .map(|turn| turn.expect("a turn while busy"))
        .collect();

    let waiting = tokio::spawn({
        let pressure = Arc::clone(&pressure);
        async move { pressure.turn().await.is_some() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "it waits while the turns are held");
    drop(arrivals);

    let took_a_turn = tokio::time::timeout(BUSY_FOR * 2, waiting)
        .await
        .expect("it runs once the lane is calm")
        .expect("job ran");
    assert!(!took_a_turn, "it runs without a turn");
    drop(held);
}
