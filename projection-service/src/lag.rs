//! The projector gauges: how far each projector got and how far behind the stream it is.
//!
//! - `synapse_projector_position`: the last event position applied;
//! - `synapse_projector_lag_events`: the stream's last sequence minus the checkpoint's;
//! - `synapse_projector_lag_seconds`: the age of the oldest message not yet applied
//!   (0 when caught up);
//! - `synapse_projector_batch_seconds`: how long applying one batch took (a histogram,
//!   with the buckets of the HTTP latency).
//!
//! Each is labelled with `projector` and `stream`. The position is set after every
//! batch; the lag needs a round trip to NATS and is sampled on a timer instead.

use crate::apply::Applied;
use crate::checkpoint::Checkpoint;
use async_nats::jetstream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the lag is measured: often enough for a dashboard and an alert, rare
/// enough that a stream-info request per projector costs nothing.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// Record a batch just applied, and how long its transaction took.
pub fn record_applied(projector: &'static str, stream: &str, applied: &Applied, took: Duration) {
    let labels = [
        ("projector", projector.to_owned()),
        ("stream", stream.to_owned()),
    ];
    metrics::gauge!("synapse_projector_position", &labels).set(applied.checkpoint.position as f64);
    metrics::counter!("synapse_projector_events_applied_total", &labels)
        .increment(applied.applied as u64);
    metrics::counter!("synapse_projector_events_skipped_total", &labels)
        .increment(applied.skipped as u64);
    metrics::histogram!(synapse_shared::telemetry::PROJECTOR_BATCH_SECONDS, &labels)
        .record(took.as_secs_f64());
}

/// Measure the lag every [`SAMPLE_INTERVAL`] until `shutdown`, from the checkpoint the
/// consumer publishes on `progress`.
pub async fn sample(
    jetstream: jetstream::Context,
    stream: String,
    projector: &'static str,
    mut progress: watch::Receiver<Option<Checkpoint>>,
    shutdown: CancellationToken,
) {
    let labels = [
        ("projector", projector.to_owned()),
        ("stream", stream.clone()),
    ];
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // Copy the checkpoint out: a watch borrow must not be held across an await.
        let Some(checkpoint) = *progress.borrow_and_update() else {
            continue;
        };
        metrics::gauge!("synapse_projector_position", &labels).set(checkpoint.position as f64);
        match measure(&jetstream, &stream, checkpoint).await {
            Ok(lag) => {
                metrics::gauge!("synapse_projector_lag_events", &labels).set(lag.events as f64);
                if let Some(seconds) = lag.seconds {
                    metrics::gauge!("synapse_projector_lag_seconds", &labels).set(seconds);
                }
            }
            // The consumer reports NATS outages; the gauges keep their last value.
            Err(error) => tracing::debug!(projector, %error, "cannot measure projector lag"),
        }
    }
}

struct Lag {
    events: u64,
    /// `None` when the oldest unapplied message could not be read.
    seconds: Option<f64>,
}

async fn measure(
    jetstream: &jetstream::Context,
    stream: &str,
    checkpoint: Checkpoint,
) -> Result<Lag, async_nats::Error> {
    // `get_stream` fetches the stream's info, so its cached info is current.
    let stream = jetstream.get_stream(stream).await?;
    let last_sequence = stream.cached_info().state.last_sequence;
    let events = last_sequence.saturating_sub(checkpoint.stream_sequence());
    if events == 0 {
        return Ok(Lag {
            events,
            seconds: Some(0.0),
        });
    }
    let oldest = stream
        .get_raw_message(checkpoint.stream_sequence() + 1)
        .await;
    let seconds = oldest.ok().map(|message| {
        let published = message.time.unix_timestamp_nanos();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as i128);
        (now - published).max(0) as f64 / 1e9
    });
    Ok(Lag { events, seconds })
}
