//! A sustained load with the watermark poller running: the driver's commands, then a
//! wait until every read model has the last event; and the per-event delays computed
//! from what the poller and the live-feed clients saw.

use super::drive::{self, DriveSettings, Driven};
use super::watermarks::{Poller, Series, Watermarks};
use super::websocket::Received;
use crate::latency::Latencies;
use anyhow::{bail, Context};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the read models may take to catch up once the driver stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What a sustained run produced.
pub struct Sustained {
    pub driven: Driven,
    pub watermarks: Watermarks,
    /// The log's head before the first command: the run's events are above it.
    pub before: i64,
    /// The log's head after the last command.
    pub after: i64,
}

impl Sustained {
    /// Events the run appended per second of driving.
    pub fn achieved_rate(&self) -> f64 {
        (self.after - self.before) as f64 / self.driven.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Drive the command service at `base_url` with `settings`, sampling watermarks every
/// `poll` from `database_url`, and wait until every read model has the last event.
pub async fn run(
    pool: &PgPool,
    database_url: &str,
    poll: Duration,
    base_url: &str,
    client: &reqwest::Client,
    settings: &DriveSettings,
) -> anyhow::Result<Sustained> {
    let poller = Poller::start(database_url, poll).await?;
    let before = log_head(pool).await?;
    let driven = drive::drive(base_url, client, settings).await;
    let driven = match driven {
        Ok(driven) => driven,
        Err(error) => {
            let _ = poller.finish().await;
            return Err(error);
        }
    };
    let after = log_head(pool).await?;
    let drained = wait_for_read_models(pool, after).await;
    let watermarks = poller.finish().await?;
    drained?;
    Ok(Sustained {
        driven,
        watermarks,
        before,
        after,
    })
}

async fn log_head(pool: &PgPool) -> anyhow::Result<i64> {
    let (head,): (i64,) = sqlx::query_as("select coalesce(max(position), 0) from workflow_events")
        .fetch_one(pool)
        .await
        .context("reading the log's head")?;
    Ok(head)
}

async fn wait_for_read_models(pool: &PgPool, position: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (lowest,): (Option<i64>,) =
            sqlx::query_as("select min(position) from projector_checkpoints")
                .fetch_one(pool)
                .await
                .context("reading the checkpoints")?;
        if lowest.unwrap_or(0) >= position {
            return Ok(());
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            bail!("the read models did not reach position {position} within {DRAIN_TIMEOUT:?} (lowest checkpoint {lowest:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per event in `(before, after]`: from the moment the log showed it committed to the
/// moment `visible` reached it. Events `visible` never reached are counted, not timed.
pub fn delays(log: &Series, visible: &Series, before: i64, after: i64) -> (Latencies, u64) {
    let mut delays = Latencies::new();
    let mut missing = 0;
    for position in before + 1..=after {
        match (
            log.first_reaching(position),
            visible.first_reaching(position),
        ) {
            (Some(committed), Some(seen)) => {
                delays.record(seen.saturating_duration_since(committed))
            }
            _ => missing += 1,
        }
    }
    (delays, missing)
}

/// Live-feed delivery delays of the run's events: from commit (as the log showed it)
/// and from the event's arrival at the bench's own stream consumer, to the client.
pub struct Deliveries {
    pub from_commit: Latencies,
    pub from_stream: Latencies,
    /// Deliveries of events the poller never saw committed or the stream consumer never
    /// received (neither should happen).
    pub unmatched: u64,
}

pub fn deliveries(
    received: &[Received],
    log: &Series,
    arrivals: &HashMap<i64, Instant>,
    before: i64,
    after: i64,
    include: impl Fn(&Received) -> bool,
) -> Deliveries {
    let mut result = Deliveries {
        from_commit: Latencies::new(),
        from_stream: Latencies::new(),
        unmatched: 0,
    };
    for client in received.iter().filter(|client| include(client)) {
        for (position, at) in &client.deliveries {
            if *position <= before || *position > after {
                continue;
            }
            match (log.first_reaching(*position), arrivals.get(position)) {
                (Some(committed), Some(arrived)) => {
                    result
                        .from_commit
                        .record(at.saturating_duration_since(committed));
                    result
                        .from_stream
                        .record(at.saturating_duration_since(*arrived));
                }
                _ => result.unmatched += 1,
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(start: Instant, points: &[(u64, i64)]) -> Series {
        let mut series = Series::default();
        for (ms, value) in points {
            series.record(start + Duration::from_millis(*ms), *value);
        }
        series
    }

    #[test]
    fn each_event_is_timed_from_its_commit_to_its_projection() {
        let start = Instant::now();
        // Events 11..=20 commit at 0 ms, 21..=30 at 10 ms; the read model has 11..=20
        // at 20 ms and the rest at 25 ms.
        let log = series(start, &[(0, 20), (10, 30), (20, 30), (25, 30)]);
        let read_model = series(start, &[(0, 10), (10, 10), (20, 20), (25, 30)]);
        let (mut delays, missing) = delays(&log, &read_model, 10, 30);
        assert_eq!(missing, 0);
        assert_eq!(delays.len(), 20);
        assert_eq!(delays.percentile(50.0), Some(Duration::from_millis(15)));
        assert_eq!(delays.percentile(100.0), Some(Duration::from_millis(20)));
    }

    #[test]
    fn events_never_projected_are_counted_not_timed() {
        let start = Instant::now();
        let log = series(start, &[(0, 5)]);
        let read_model = series(start, &[(0, 3)]);
        let (delays, missing) = delays(&log, &read_model, 0, 5);
        assert_eq!((delays.len(), missing), (3, 2));
    }

    #[test]
    fn deliveries_outside_the_run_or_unseen_are_left_out_or_counted() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let log = series(start, &[(0, 12)]);
        let arrivals = HashMap::from([(11, at(4)), (12, at(6))]);
        let client = Received {
            client: 0,
            deliveries: vec![(9, at(1)), (11, at(30)), (12, at(40)), (13, at(50))],
            lagged: false,
            closed_early: false,
        };
        let mut result = deliveries(&[client], &log, &arrivals, 10, 13, |_| true);
        assert_eq!(result.unmatched, 1);
        assert_eq!(result.from_commit.len(), 2);
        assert_eq!(
            result.from_commit.percentile(100.0),
            Some(Duration::from_millis(40))
        );
        assert_eq!(
            result.from_stream.percentile(0.0),
            Some(Duration::from_millis(26))
        );
    }
}
