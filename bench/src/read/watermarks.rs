//! When each event became visible where: a poller samples, every few milliseconds in
//! one statement (one snapshot), the highest committed position of the log and the
//! checkpoints of the read models. Events enter the log in position order (appends are
//! serialised and commit in order), and a projector commits its rows and checkpoint in
//! one transaction, so "the log's head reached p" is the moment a reader could first see
//! event p committed, and "the checkpoint reached p" the moment a reader of the read
//! model could first see it.

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A non-decreasing value over time, sampled.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// `(sampled at, value)`; values never decrease.
    points: Vec<(Instant, i64)>,
}

impl Series {
    /// Record a sample; a value below the last one (impossible for positions, but a
    /// checkpoint row might be missing for a moment) keeps the last one.
    pub fn record(&mut self, at: Instant, value: i64) {
        let value = self
            .points
            .last()
            .map_or(value, |(_, last)| value.max(*last));
        self.points.push((at, value));
    }

    /// When the value first reached `value`, if it did.
    pub fn first_reaching(&self, value: i64) -> Option<Instant> {
        let index = self.points.partition_point(|(_, sampled)| *sampled < value);
        self.points.get(index).map(|(at, _)| *at)
    }
}

/// What the poller saw.
#[derive(Debug, Clone, Default)]
pub struct Watermarks {
    /// Highest position committed to `workflow_events`.
    pub log: Series,
    /// Checkpoint of the projector writing `rm_events` (timeline and histories).
    pub timeline: Series,
    /// The lowest checkpoint of all projectors: every read model has the event.
    pub all_read_models: Series,
    /// Sampling rounds and their longest gap, to judge the resolution.
    pub rounds: u64,
    pub longest_gap: Duration,
}

/// A running poller.
pub struct Poller {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<anyhow::Result<Watermarks>>,
}

/// The projection service's projectors, by the names of their checkpoint rows.
pub const PROJECTORS: [&str; 3] = ["asset_history", "batches", "disciplines"];
/// The projector that writes `rm_events` (timeline and histories).
const TIMELINE_PROJECTOR: &str = PROJECTORS[0];

impl Poller {
    /// Sample every `interval` on a connection of its own.
    pub async fn start(database_url: &str, interval: Duration) -> anyhow::Result<Self> {
        let mut connection = PgConnection::connect(database_url)
            .await
            .context("connecting the watermark poller")?;
        let (stop, mut stopped) = oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut watermarks = Watermarks::default();
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut previous: Option<Instant> = None;
            // Once told to stop, one last sample: the caller stops the poller as soon
            // as it has seen the read models drained, which can be before this poller
            // sampled that state; without it, the last events would count as never seen.
            let mut last_round = false;
            while !last_round {
                tokio::select! {
                    _ = &mut stopped => last_round = true,
                    _ = ticker.tick() => {}
                }
                let at = Instant::now();
                let (log, timeline, all): (i64, i64, i64) = sqlx::query_as(
                    "select (select coalesce(max(position), 0) from workflow_events),
                            coalesce((select position from projector_checkpoints
                                      where projector = $1), 0),
                            (select case when count(*) >= $2 then min(position) else 0 end
                             from projector_checkpoints)",
                )
                .bind(TIMELINE_PROJECTOR)
                // Until every projector has its checkpoint row, not every read model
                // has anything.
                .bind(PROJECTORS.len() as i64)
                .fetch_one(&mut connection)
                .await
                .context("sampling the watermarks")?;
                watermarks.log.record(at, log);
                watermarks.timeline.record(at, timeline);
                watermarks.all_read_models.record(at, all);
                watermarks.rounds += 1;
                if let Some(previous) = previous {
                    watermarks.longest_gap = watermarks.longest_gap.max(at - previous);
                }
                previous = Some(at);
            }
            connection.close().await.ok();
            Ok(watermarks)
        });
        Ok(Self { stop, handle })
    }

    pub async fn finish(self) -> anyhow::Result<Watermarks> {
        let _ = self.stop.send(());
        self.handle.await.context("the watermark poller panicked")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sample_at_or_above_a_value_is_when_it_was_reached() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut series = Series::default();
        series.record(at(0), 10);
        series.record(at(5), 10);
        series.record(at(10), 25);
        series.record(at(15), 40);
        assert_eq!(series.first_reaching(5), Some(at(0)));
        assert_eq!(series.first_reaching(10), Some(at(0)));
        assert_eq!(series.first_reaching(11), Some(at(10)));
        assert_eq!(series.first_reaching(40), Some(at(15)));
        assert_eq!(series.first_reaching(41), None);
    }

    #[test]
    fn a_sample_below_the_last_keeps_the_series_monotonic() {
        let start = Instant::now();
        let mut series = Series::default();
        series.record(start, 30);
        series.record(start + Duration::from_millis(5), 0);
        assert_eq!(series.first_reaching(30), Some(start));
        assert_eq!(series.first_reaching(31), None);
    }
}
