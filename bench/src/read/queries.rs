//! Timeline and asset-history queries under concurrent load: each client repeatedly
//! either reads a timeline with a mix of filters (a first page, then up to two more by
//! keyset) or one asset's history, and every request's latency is recorded.

use crate::latency::Latencies;
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::IgnoredAny;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::plant::DISCIPLINES;

/// Pages a client reads of one timeline before it moves on: a person paging a table.
const PAGES_PER_TIMELINE: usize = 3;
/// Assets sampled for asset filters and histories.
const SAMPLED_ASSETS: i64 = 5_000;
/// A request slower than this is an error, not a sample.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Event types the timeline's type filter picks from: common, rare and absent ones.
const EVENT_TYPES: [&str; 9] = [
    "ASSET_CREATED",
    "ASSET_UPDATED",
    "CABLE_CREATED",
    "RULE_EXECUTED",
    "FINDING_RAISED",
    "ROLLBACK",
    "BATCH_STARTED",
    "BATCH_COMPLETED",
    "RULE_ERROR",
];

/// Values the filters are drawn from, read from the read models once the projection
/// has caught up.
pub struct Samples {
    pub assets: Vec<Uuid>,
    pub batches: Vec<Uuid>,
    pub executions: Vec<Uuid>,
    pub rules: Vec<Uuid>,
    pub actors: Vec<String>,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub last_position: i64,
}

impl Samples {
    pub async fn read(pool: &sqlx::PgPool) -> anyhow::Result<Self> {
        let assets: Vec<(Uuid,)> = sqlx::query_as(
            "select aggregate_id from rm_aggregates where aggregate_type = 'asset'
             order by random() limit $1",
        )
        .bind(SAMPLED_ASSETS)
        .fetch_all(pool)
        .await
        .context("sampling assets")?;
        let batches: Vec<(Uuid, Option<String>)> =
            sqlx::query_as("select correlation_id, kind from rm_batches")
                .fetch_all(pool)
                .await
                .context("listing batches")?;
        let rules: Vec<(Uuid,)> = sqlx::query_as("select distinct rule_id from rm_batch_rules")
            .fetch_all(pool)
            .await
            .context("listing rules")?;
        let actors: Vec<(String,)> = sqlx::query_as("select distinct actor from rm_batches")
            .fetch_all(pool)
            .await
            .context("listing actors")?;
        let (first, last, last_position): (DateTime<Utc>, DateTime<Utc>, i64) = sqlx::query_as(
            "select min(occurred_at), max(occurred_at), max(position) from rm_events",
        )
        .fetch_one(pool)
        .await
        .context("reading the time range")?;
        let samples = Self {
            assets: assets.into_iter().map(|(id,)| id).collect(),
            executions: batches
                .iter()
                .filter(|(_, kind)| kind.as_deref() == Some("rule_execution"))
                .map(|(id, _)| *id)
                .collect(),
            batches: batches.into_iter().map(|(id, _)| id).collect(),
            rules: rules.into_iter().map(|(id,)| id).collect(),
            actors: actors.into_iter().map(|(actor,)| actor).collect(),
            first,
            last,
            last_position,
        };
        anyhow::ensure!(
            !samples.assets.is_empty()
                && !samples.executions.is_empty()
                && !samples.rules.is_empty()
                && !samples.actors.is_empty(),
            "the read models lack assets, executions, rules or actors to query"
        );
        Ok(samples)
    }
}

/// The mixes of filters the timeline is read with, as an engineer's screen would ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shape {
    /// Everything concerning one asset.
    Asset,
    /// One asset's outcomes of one rule.
    AssetAndRule,
    /// What an execution changed: its asset updates and cable creations.
    BatchChanges,
    /// Every event of one batch.
    Batch,
    /// A rule's outcomes that still stand (rolled-back ones excluded).
    RuleStanding,
    /// One discipline's events of one type (some pairs never occur).
    DisciplineAndType,
    /// One discipline since a time.
    DisciplineSince,
    /// What one person did in a time window.
    ActorWindow,
    /// The batches one person finished or had rolled back (rare types).
    ActorBatchEnds,
    /// One event type from a position onwards.
    TypeFromPosition,
    /// Everything from a position onwards, rolled-back events excluded.
    AllFromPosition,
}

impl Shape {
    pub const ALL: [Shape; 11] = [
        Shape::Asset,
        Shape::AssetAndRule,
        Shape::BatchChanges,
        Shape::Batch,
        Shape::RuleStanding,
        Shape::DisciplineAndType,
        Shape::DisciplineSince,
        Shape::ActorWindow,
        Shape::ActorBatchEnds,
        Shape::TypeFromPosition,
        Shape::AllFromPosition,
    ];

    /// The query string of a first page, with values drawn from `samples`.
    pub fn parameters(
        self,
        samples: &Samples,
        rng: &mut fastrand::Rng,
    ) -> Vec<(&'static str, String)> {
        let pick = |rng: &mut fastrand::Rng, values: &[Uuid]| {
            values[rng.usize(..values.len())].to_string()
        };
        let discipline =
            |rng: &mut fastrand::Rng| DISCIPLINES[rng.usize(..DISCIPLINES.len())].to_owned();
        let actor =
            |rng: &mut fastrand::Rng| samples.actors[rng.usize(..samples.actors.len())].clone();
        let position =
            |rng: &mut fastrand::Rng| rng.i64(0..samples.last_position.max(1)).to_string();
        let span = (samples.last - samples.first).num_milliseconds().max(1);
        let time = |rng: &mut fastrand::Rng| {
            samples.first + chrono::Duration::milliseconds(rng.i64(0..span))
        };
        let rfc3339 = |time: DateTime<Utc>| time.to_rfc3339_opts(SecondsFormat::Millis, true);
        match self {
            Shape::Asset => vec![("asset_id", pick(rng, &samples.assets))],
            Shape::AssetAndRule => vec![
                ("asset_id", pick(rng, &samples.assets)),
                ("rule_id", pick(rng, &samples.rules)),
            ],
            Shape::BatchChanges => vec![
                ("correlation_id", pick(rng, &samples.executions)),
                ("event_type", "ASSET_UPDATED,CABLE_CREATED".to_owned()),
            ],
            Shape::Batch => vec![("correlation_id", pick(rng, &samples.batches))],
            Shape::RuleStanding => vec![
                ("rule_id", pick(rng, &samples.rules)),
                ("include_rolled_back", "false".to_owned()),
            ],
            Shape::DisciplineAndType => vec![
                ("discipline", discipline(rng)),
                (
                    "event_type",
                    EVENT_TYPES[rng.usize(..EVENT_TYPES.len())].to_owned(),
                ),
            ],
            Shape::DisciplineSince => vec![
                ("discipline", discipline(rng)),
                ("from", rfc3339(time(rng))),
            ],
            Shape::ActorWindow => {
                let from = time(rng);
                let to = from + chrono::Duration::milliseconds(span / 10);
                vec![
                    ("actor", actor(rng)),
                    ("from", rfc3339(from)),
                    ("to", rfc3339(to)),
                ]
            }
            Shape::ActorBatchEnds => vec![
                ("actor", actor(rng)),
                ("event_type", "BATCH_COMPLETED,BATCH_ROLLED_BACK".to_owned()),
            ],
            Shape::TypeFromPosition => vec![
                (
                    "event_type",
                    EVENT_TYPES[rng.usize(..EVENT_TYPES.len())].to_owned(),
                ),
                ("after", position(rng)),
            ],
            Shape::AllFromPosition => vec![
                ("after", position(rng)),
                ("include_rolled_back", "false".to_owned()),
            ],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Asset => "asset",
            Shape::AssetAndRule => "asset + rule",
            Shape::BatchChanges => "batch + 2 event types",
            Shape::Batch => "batch",
            Shape::RuleStanding => "rule, rolled back excluded",
            Shape::DisciplineAndType => "discipline + event type",
            Shape::DisciplineSince => "discipline + from",
            Shape::ActorWindow => "actor + from/to",
            Shape::ActorBatchEnds => "actor + 2 rare event types",
            Shape::TypeFromPosition => "event type + after",
            Shape::AllFromPosition => "after, rolled back excluded",
        }
    }
}

/// How hard and how long to query.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub clients: usize,
    pub duration: Duration,
    /// Requests in this first stretch are made but not recorded.
    pub warmup: Duration,
}

/// Latencies of one kind of request and the rows it returned.
#[derive(Debug, Default)]
pub struct Measured {
    pub latencies: Latencies,
    pub rows: u64,
}

impl Measured {
    fn record(&mut self, elapsed: Duration, rows: usize) {
        self.latencies.record(elapsed);
        self.rows += rows as u64;
    }

    fn merge(&mut self, other: Measured) {
        self.latencies.extend(other.latencies);
        self.rows += other.rows;
    }

    /// Average rows per request.
    pub fn rows_per_request(&self) -> f64 {
        self.rows as f64 / self.latencies.len().max(1) as f64
    }
}

/// Everything the load measured (after the warm-up).
#[derive(Debug, Default)]
pub struct Results {
    pub timeline: Measured,
    pub history: Measured,
    pub shapes: BTreeMap<Shape, Measured>,
    /// Wall time of the recorded stretch.
    pub elapsed: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Results {
    pub fn requests_per_second(&self) -> f64 {
        let requests = self.timeline.latencies.len() + self.history.latencies.len();
        requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn merge(&mut self, other: Results) {
        self.timeline.merge(other.timeline);
        self.history.merge(other.history);
        for (shape, measured) in other.shapes {
            self.shapes.entry(shape).or_default().merge(measured);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Run `load.clients` clients against the query service at `base_url`.
pub async fn run(base_url: &str, samples: Arc<Samples>, load: &Load) -> anyhow::Result<Results> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(load.clients)
        .build()
        .context("building the query client")?;
    let started = Instant::now();
    let recording_from = started + load.warmup;
    let deadline = recording_from + load.duration;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..load.clients {
        let client = Client {
            http: http.clone(),
            base_url: base_url.to_owned(),
            samples: samples.clone(),
            rng: fastrand::Rng::with_seed(client as u64 + 1),
            recording_from,
            deadline,
        };
        clients.spawn(client.run());
    }
    let mut results = Results::default();
    while let Some(client) = clients.join_next().await {
        results.merge(client.context("a query client panicked")?);
    }
    results.elapsed = deadline.saturating_duration_since(recording_from);
    Ok(results)
}

/// One client's loop.
struct Client {
    http: reqwest::Client,
    base_url: String,
    samples: Arc<Samples>,
    rng: fastrand::Rng,
    recording_from: Instant,
    deadline: Instant,
}

/// The part of a page the client reads: how many rows and where the next page starts.
#[derive(serde::Deserialize)]
struct Page {
    events: Vec<IgnoredAny>,
    next_after: Option<i64>,
}

impl Client {
    async fn run(mut self) -> Results {
        let mut results = Results::default();
        while Instant::now() < self.deadline {
            if self.rng.bool() {
                let shape = Shape::ALL[self.rng.usize(..Shape::ALL.len())];
                let mut parameters = shape.parameters(&self.samples, &mut self.rng);
                for _ in 0..PAGES_PER_TIMELINE {
                    let url = format!("{}/events/timeline", self.base_url);
                    let Some(page) = self.get(&url, &parameters, &mut results, Some(shape)).await
                    else {
                        break;
                    };
                    let Some(next_after) = page.next_after else {
                        break;
                    };
                    parameters.retain(|(name, _)| *name != "after");
                    parameters.push(("after", next_after.to_string()));
                }
            } else {
                let asset = self.samples.assets[self.rng.usize(..self.samples.assets.len())];
                let url = format!("{}/events/assets/{asset}/history", self.base_url);
                self.get(&url, &[], &mut results, None).await;
            }
        }
        results
    }

    /// One request: recorded under the shape (timeline) or as a history (`None`).
    async fn get(
        &self,
        url: &str,
        parameters: &[(&str, String)],
        results: &mut Results,
        shape: Option<Shape>,
    ) -> Option<Page> {
        let started = Instant::now();
        let outcome = async {
            let response = self.http.get(url).query(parameters).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            let elapsed = started.elapsed();
            anyhow::ensure!(
                status.is_success(),
                "{url} {parameters:?} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            let page: Page = serde_json::from_slice(&body).context("reading a page")?;
            anyhow::Ok((elapsed, page))
        }
        .await;
        match outcome {
            Ok((elapsed, page)) => {
                if started >= self.recording_from && started < self.deadline {
                    let rows = page.events.len();
                    match shape {
                        Some(shape) => {
                            results.timeline.record(elapsed, rows);
                            results
                                .shapes
                                .entry(shape)
                                .or_default()
                                .record(elapsed, rows);
                        }
                        None => results.history.record(elapsed, rows),
                    }
                }
                Some(page)
            }
            Err(error) => {
                results.errors += 1;
                if results.first_error.is_none() {
                    results.first_error = Some(format!("{error:#}"));
                }
                None
            }
        }
    }
}
