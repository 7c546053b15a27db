//! Projection throughput: a projection service started on a stream that already holds
//! the whole log, timed from process start until every projector's checkpoint reaches
//! the stream's last message; against a raw ordered consumer reading the same stream.

use super::watermarks::PROJECTORS;
use crate::environment::Environment;
use crate::stream::{self, RawRead};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the checkpoints are read while the projectors catch up.
const POLL: Duration = Duration::from_millis(50);
/// Slowest catch-up accepted before the benchmark gives up: 400 events/s.
const SLOWEST_EVENTS_PER_SECOND: u64 = 400;

pub struct CatchUp {
    /// Messages in the stream (its last sequence).
    pub messages: u64,
    /// From process start until the last projector reached the end.
    pub elapsed: Duration,
    /// From process start until `/healthz` answered.
    pub startup: Duration,
    /// When each projector reached the end, from process start.
    pub projectors: BTreeMap<&'static str, Duration>,
    /// CPU seconds of the projection service during the catch-up.
    pub cpu_seconds: f64,
    pub peak_kib: u64,
    /// The limit: the same stream read by a raw ordered consumer.
    pub raw: RawRead,
}

pub async fn measure(environment: &mut Environment) -> anyhow::Result<CatchUp> {
    let nats_url = environment.endpoints.nats_url.clone();
    let messages = stream::last_sequence(&nats_url, &environment.stream).await?;
    let raw = stream::raw_read(&nats_url, &environment.stream, messages).await?;
    if raw.messages < messages {
        bail!("the raw read got {} of {messages} messages", raw.messages);
    }
    eprintln!(
        "  raw ordered consumer: {messages} messages in {:.2} s",
        raw.elapsed.as_secs_f64()
    );
    let pool = environment.pool().await?;
    let timeout = Duration::from_secs((messages / SLOWEST_EVENTS_PER_SECOND).max(60));
    let started = Instant::now();
    environment.start_projection().await?;
    let startup = started.elapsed();
    let mut projectors = BTreeMap::new();
    let mut last_report = Instant::now();
    while projectors.len() < PROJECTORS.len() {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("select projector, stream_sequence from projector_checkpoints")
                .fetch_all(&pool)
                .await
                .context("reading the checkpoints")?;
        let elapsed = started.elapsed();
        for (name, sequence) in &rows {
            if let Some(projector) = PROJECTORS.iter().find(|p| **p == name.as_str()) {
                if *sequence as u64 >= messages {
                    projectors.entry(*projector).or_insert(elapsed);
                }
            }
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  catching up after {:.0} s: {rows:?}",
                elapsed.as_secs_f64()
            );
            last_report = Instant::now();
        }
        if elapsed > timeout {
            bail!("the projectors did not catch up on {messages} messages within {timeout:?}: {rows:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let elapsed = started.elapsed();
    let projection = environment
        .projection
        .as_ref()
        .context("the projection service is gone")?;
    Ok(CatchUp {
        messages,
        elapsed,
        startup,
        projectors,
        cpu_seconds: projection.cpu_seconds()?,
        peak_kib: projection.peak_memory_kib()?,
        raw,
    })
}
