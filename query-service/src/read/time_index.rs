//! Where in the log a time lies, so a time-filtered timeline scans a range of positions
//! instead of every event before the window.
//!
//! The timeline is ordered by position, but a filter on `occurred_at` says nothing the
//! planner can use about positions: it assumes matches are spread evenly and scans in
//! position order from the start, through every event before the window. Positions and
//! times go nearly together (events commit in position order a moment after they
//! occur) but not exactly (a long transaction's events occurred before other, later
//! committed ones), so a time cannot be turned into a position by a lookup.
//!
//! This summary makes the bounds exact instead: per bucket of [`BUCKET`] positions, the
//! earliest and latest `occurred_at` of its events. Every event in the buckets before
//! the first bucket with an event at or after `from` occurred before `from`; every event
//! in the buckets after the last bucket with an event at or before `to` occurred after
//! `to`. Events above the summarised position (`covered`) are not
//! bounded at all: queries read them as a separate range.
//!
//! One summary per database, kept by the process and brought up to date (reading only
//! the events added since) when a time-filtered query finds it older than
//! [`REFRESH_AFTER`]. The event at `covered` is checked at every refresh, so read models
//! refilled with other events (a wiped database) are summarised again from scratch.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Positions per bucket: a million events make ~1,000 buckets (~40 KB), and a bound is
/// at most one bucket wider than the events it bounds.
pub const BUCKET: i64 = 1024;
/// How stale a summary may be before a time-filtered query refreshes it. Staleness costs
/// only speed (the events above `covered` are read unbounded), never correctness.
const REFRESH_AFTER: Duration = Duration::from_millis(500);

/// Earliest and latest `occurred_at` of a bucket's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
}

/// The summary of the events up to `covered`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Indexed by `position / BUCKET`; `None` for a bucket without events.
    buckets: Vec<Option<Span>>,
    /// Every event at or below this position is summarised.
    covered: i64,
    /// The event at `covered`, to notice read models refilled with other events.
    covered_event: Option<Uuid>,
}

/// One bucket's part of a refresh: `(bucket, earliest, latest)`.
pub type BucketRow = (i64, DateTime<Utc>, DateTime<Utc>);

/// Ranges of positions that can hold events of a time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranges {
    /// Every event in the window has a position above this.
    pub above: i64,
    /// Among summarised events, those in the window are at or below this (`None`: no
    /// upper bound, there was no `to`).
    pub upto: Option<i64>,
    /// Events above this are not summarised and must be read whatever the bounds say.
    pub covered: i64,
}

impl Summary {
    /// Add the buckets of the events in `(self.covered, covered]`.
    pub fn extend(&mut self, rows: &[BucketRow], covered: i64, covered_event: Option<Uuid>) {
        for &(bucket, earliest, latest) in rows {
            let Ok(index) = usize::try_from(bucket) else {
                continue;
            };
            if self.buckets.len() <= index {
                self.buckets.resize(index + 1, None);
            }
            let span = match self.buckets[index] {
                Some(span) => Span {
                    earliest: span.earliest.min(earliest),
                    latest: span.latest.max(latest),
                },
                None => Span { earliest, latest },
            };
            self.buckets[index] = Some(span);
        }
        if covered > self.covered {
            self.covered = covered;
            self.covered_event = covered_event;
        }
    }

    /// The position ranges that can hold events occurring in `[from, to]`.
    pub fn ranges(&self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Ranges {
        let above = match from {
            None => 0,
            Some(from) => {
                // The first bucket with an event at or after `from`: every event before
                // it occurred before `from`.
                let first = self
                    .buckets
                    .iter()
                    .position(|bucket| bucket.is_some_and(|span| span.latest >= from));
                match first {
                    Some(bucket) => bucket as i64 * BUCKET - 1,
                    None => self.covered,
                }
                .max(0)
            }
        };
        let upto = to.map(|to| {
            // The last bucket with an event at or before `to`: every summarised event
            // after it occurred after `to`.
            let last = self
                .buckets
                .iter()
                .rposition(|bucket| bucket.is_some_and(|span| span.earliest <= to));
            match last {
                Some(bucket) => ((bucket as i64 + 1) * BUCKET - 1).min(self.covered),
                None => 0,
            }
        });
        Ranges {
            above: above.min(self.covered),
            upto,
            covered: self.covered,
        }
    }
}

/// A database's summary and when it was last brought up to date.
struct TimeIndex {
    summary: Mutex<(Arc<Summary>, Option<Instant>)>,
    /// Held while refreshing, so concurrent queries do not all read the same new events.
    refreshing: tokio::sync::Mutex<()>,
}

/// The summaries of every database this process reads, by `host:port/database`.
fn registry() -> &'static Mutex<HashMap<String, Arc<TimeIndex>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<TimeIndex>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn index_of(pool: &PgPool) -> Arc<TimeIndex> {
    let options = pool.connect_options();
    let key = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    let mut registry = registry().lock().unwrap_or_else(PoisonError::into_inner);
    registry
        .entry(key)
        .or_insert_with(|| {
            Arc::new(TimeIndex {
                summary: Mutex::new((Arc::new(Summary::default()), None)),
                refreshing: tokio::sync::Mutex::new(()),
            })
        })
        .clone()
}

/// The database's summary, refreshed first if it is older than [`REFRESH_AFTER`].
pub async fn summary(pool: &PgPool) -> Result<Arc<Summary>, sqlx::Error> {
    let index = index_of(pool);
    let fresh = |index: &TimeIndex| {
        let guard = index.summary.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.1 {
            Some(at) if at.elapsed() < REFRESH_AFTER => Some(guard.0.clone()),
            _ => None,
        }
    };
    if let Some(summary) = fresh(&index) {
        return Ok(summary);
    }
    let _refreshing = index.refreshing.lock().await;
    // Another query may have refreshed while this one waited.
    if let Some(summary) = fresh(&index) {
        return Ok(summary);
    }
    let current = index
        .summary
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .0
        .clone();
    let refreshed = Arc::new(refresh(pool, &current).await?);
    *index.summary.lock().unwrap_or_else(PoisonError::into_inner) =
        (refreshed.clone(), Some(Instant::now()));
    Ok(refreshed)
}

/// The summary extended by the events added since `current` (or rebuilt, if the event
/// it ends with is no longer there).
async fn refresh(pool: &PgPool, current: &Summary) -> Result<Summary, sqlx::Error> {
    let mut summary = current.clone();
    if current.covered > 0 {
        let still_there: Option<Uuid> =
            sqlx::query_scalar("select event_id from rm_events where position = $1")
                .bind(current.covered)
                .fetch_optional(pool)
                .await?;
        if still_there != current.covered_event {
            summary = Summary::default();
        }
    }
    // The head first: everything at or below it is then visible to the query below
    // (the projector commits events in position order).
    let head: Option<(i64, Uuid)> =
        sqlx::query_as("select position, event_id from rm_events order by position desc limit 1")
            .fetch_optional(pool)
            .await?;
    let Some((head, head_event)) = head else {
        return Ok(summary);
    };
    if head <= summary.covered {
        return Ok(summary);
    }
    let rows: Vec<BucketRow> = sqlx::query_as(
        "select position / $3 as bucket, min(occurred_at), max(occurred_at)
         from rm_events where position > $1 and position <= $2
         group by 1",
    )
    .bind(summary.covered)
    .bind(head)
    .bind(BUCKET)
    .fetch_all(pool)
    .await?;
    summary.extend(&rows, head, Some(head_event));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    /// Buckets 0..=3 with the given spans (seconds), summarised up to the end of bucket 3.
    fn summary(spans: &[Option<(i64, i64)>]) -> Summary {
        let rows: Vec<BucketRow> = spans
            .iter()
            .enumerate()
            .filter_map(|(bucket, span)| span.map(|(a, b)| (bucket as i64, at(a), at(b))))
            .collect();
        let mut summary = Summary::default();
        summary.extend(&rows, spans.len() as i64 * BUCKET - 1, None);
        summary
    }

    #[test]
    fn a_from_skips_the_buckets_whose_events_all_occurred_before_it() {
        // Bucket 1 holds an event that occurred at 5, before some of bucket 0's, and
        // committed later (a long transaction): times overlap across buckets.
        let summary = summary(&[Some((0, 20)), Some((5, 30)), Some((25, 40)), Some((35, 50))]);
        assert_eq!(summary.ranges(Some(at(10)), None).above, 0);
        assert_eq!(summary.ranges(Some(at(21)), None).above, BUCKET - 1);
        assert_eq!(summary.ranges(Some(at(31)), None).above, 2 * BUCKET - 1);
        assert_eq!(summary.ranges(Some(at(45)), None).above, 3 * BUCKET - 1);
        // After everything summarised: only the events above `covered` can match.
        assert_eq!(summary.ranges(Some(at(51)), None).above, 4 * BUCKET - 1);
        assert_eq!(summary.ranges(None, None).above, 0);
    }

    #[test]
    fn a_to_cuts_after_the_last_bucket_with_an_event_at_or_before_it() {
        // Bucket 3 holds an event at 12 that committed late: a `to` of 15 must keep it.
        let summary = summary(&[
            Some((0, 10)),
            Some((11, 20)),
            Some((21, 30)),
            Some((12, 40)),
        ]);
        let covered = 4 * BUCKET - 1;
        assert_eq!(summary.ranges(None, Some(at(15))).upto, Some(covered));
        let summary = summary_without_late_event();
        assert_eq!(
            summary.ranges(None, Some(at(15))).upto,
            Some(2 * BUCKET - 1)
        );
        assert_eq!(summary.ranges(None, Some(at(-1))).upto, Some(0));
        assert_eq!(summary.ranges(None, None).upto, None);
    }

    fn summary_without_late_event() -> Summary {
        summary(&[
            Some((0, 10)),
            Some((11, 20)),
            Some((21, 30)),
            Some((31, 40)),
        ])
    }

    #[test]
    fn empty_buckets_neither_start_nor_end_a_range() {
        let summary = summary(&[Some((0, 10)), None, Some((20, 30)), None]);
        assert_eq!(summary.ranges(Some(at(15)), None).above, 2 * BUCKET - 1);
        assert_eq!(summary.ranges(None, Some(at(15))).upto, Some(BUCKET - 1));
    }

    #[test]
    fn extending_merges_a_bucket_that_was_partly_summarised() {
        let mut summary = Summary::default();
        summary.extend(&[(0, at(10), at(20))], 500, None);
        summary.extend(&[(0, at(5), at(25)), (1, at(30), at(30))], BUCKET + 3, None);
        assert_eq!(summary.covered, BUCKET + 3);
        assert_eq!(summary.ranges(Some(at(22)), None).above, 0);
        assert_eq!(summary.ranges(Some(at(26)), None).above, BUCKET - 1);
        assert_eq!(summary.ranges(None, Some(at(6))).upto, Some(BUCKET - 1));
        // The upper bound never passes what is summarised.
        assert_eq!(summary.ranges(None, Some(at(30))).upto, Some(BUCKET + 3));
    }

    #[test]
    fn an_empty_summary_bounds_nothing() {
        let ranges = Summary::default().ranges(Some(at(0)), Some(at(10)));
        assert_eq!(
            ranges,
            Ranges {
                above: 0,
                upto: Some(0),
                covered: 0
            }
        );
    }
}
