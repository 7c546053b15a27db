//! The projection service against real Postgres and JetStream.
//!
//! Until the command service publishes for us, each test plays the relay: it publishes
//! envelopes (with the relay's headers) to its own stream, which is exactly the
//! projector's input.

use anyhow::Context;
use async_nats::jetstream;
use chrono::Utc;
use projection_service::startup::{Application, Config};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Duration;
use synapse_shared::config::{DatabaseArgs, ListenArgs};
use synapse_shared::shutdown::CancellationToken;
use synapse_shared::{AggregateType, EventEnvelope, EventType};
use synapse_tests::{TestDatabase, TestNats};
use uuid::Uuid;

/// Upper bound for anything the projector should do in these tests.
const PATIENCE: Duration = Duration::from_secs(15);
const PROJECTOR: &str = "asset_history";

/// A running projection service and the means to stop it.
struct ProjectionApp {
    port: u16,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl ProjectionApp {
    async fn spawn(database: &TestDatabase, nats: &TestNats) -> anyhow::Result<Self> {
        let config = Config::new(
            DatabaseArgs {
                database_url: database.url.clone(),
                database_max_connections: 5,
            },
            nats.args.clone(),
            ListenArgs {
                listen_addr: Some("127.0.0.1:0".parse()?),
            },
        );
        let application = Application::build(config).await?;
        let port = application.port();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        Ok(Self {
            port,
            shutdown,
            running,
        })
    }

    /// Cancel and wait until the service finished its current batch and stopped.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.running)
            .await
            .context("the service did not stop in time")??
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The test's side of the stream: it publishes as the relay would.
struct Relay {
    jetstream: jetstream::Context,
    nats: TestNats,
}

impl Relay {
    async fn new() -> anyhow::Result<Self> {
        let nats = TestNats::new();
        let jetstream = nats.jetstream().await?;
        synapse_shared::nats::ensure_stream(&jetstream, &nats.args).await?;
        Ok(Self { jetstream, nats })
    }

    async fn publish(&self, events: &[EventEnvelope]) -> anyhow::Result<()> {
        for event in events {
            self.publish_with_headers(event, synapse_shared::nats::headers_for(event))
                .await?;
        }
        Ok(())
    }

    /// Publish `event` again under a new message id, as a relay would after JetStream's
    /// duplicate window had passed: the stream holds it twice.
    async fn publish_duplicate(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        let mut headers = synapse_shared::nats::headers_for(event);
        headers.insert(
            synapse_shared::nats::HEADER_MSG_ID,
            Uuid::now_v7().to_string().as_str(),
        );
        self.publish_with_headers(event, headers).await
    }

    async fn publish_with_headers(
        &self,
        event: &EventEnvelope,
        headers: async_nats::HeaderMap,
    ) -> anyhow::Result<()> {
        let subject = self.nats.args.subjects().for_event(event);
        let body = serde_json::to_vec(event)?;
        self.jetstream
            .publish_with_headers(subject, headers, body.into())
            .await?
            .await?;
        Ok(())
    }
}

/// Builds envelopes with consecutive positions, as the event log would.
pub(crate) struct History {
    /// The position of the next event.
    pub(crate) next_position: i64,
    /// The batch of the next event.
    pub(crate) correlation_id: Uuid,
    versions: BTreeMap<Uuid, i64>,
}

impl History {
    pub(crate) fn new() -> Self {
        Self {
            next_position: 1,
            correlation_id: Uuid::now_v7(),
            versions: BTreeMap::new(),
        }
    }

    pub(crate) fn event(
        &mut self,
        event_type: EventType,
        aggregate_type: AggregateType,
        aggregate_id: Uuid,
        payload: Value,
    ) -> EventEnvelope {
        let version = self.versions.entry(aggregate_id).or_insert(0);
        *version += 1;
        let position = self.next_position;
        self.next_position += 1;
        EventEnvelope {
            event_id: Uuid::now_v7(),
            position,
            event_type,
            aggregate_type,
            aggregate_id,
            aggregate_version: *version,
            correlation_id: self.correlation_id,
            causation_id: None,
            rule_id: None,
            rule_version: None,
            discipline: Some("ELECTRICAL".to_owned()),
            actor: "engineer@example.com".to_owned(),
            occurred_at: Utc::now(),
            schema_version: synapse_shared::event::SCHEMA_VERSION,
            payload,
        }
    }

    fn asset_change(
        &mut self,
        event_type: EventType,
        id: Uuid,
        before: Value,
        after: Value,
    ) -> EventEnvelope {
        self.event(
            event_type,
            AggregateType::Asset,
            id,
            json!({ "before": before, "after": after }),
        )
    }

    /// A motor created and then re-rated `updates` times.
    fn motor_life(&mut self, id: Uuid, updates: i64) -> Vec<EventEnvelope> {
        let tag = format!("M-{}", &id.simple().to_string()[..8]);
        let mut events = vec![self.asset_change(
            EventType::AssetCreated,
            id,
            Value::Null,
            motor(id, &tag, 10, 1),
        )];
        for update in 1..=updates {
            events.push(self.asset_change(
                EventType::AssetUpdated,
                id,
                motor(id, &tag, 10 + update - 1, update),
                motor(id, &tag, 10 + update, update + 1),
            ));
        }
        events
    }
}

fn motor(id: Uuid, tag: &str, power_kw: i64, version: i64) -> Value {
    json!({
        "id": id, "tag": tag, "asset_type": "MOTOR", "discipline": "ELECTRICAL",
        "name": null, "area": "A1", "properties": { "power_kw": power_kw }, "version": version,
    })
}

async fn connect(database: &TestDatabase) -> anyhow::Result<PgPool> {
    Ok(PgPool::connect(&database.url).await?)
}

/// Wait, within [`PATIENCE`], until the projector has applied `position`.
async fn wait_for_position(pool: &PgPool, position: i64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let applied = checkpoint_position(pool).await?;
        if applied >= position {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the projector reached position {applied}, not {position}, in {PATIENCE:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn checkpoint_position(pool: &PgPool) -> anyhow::Result<i64> {
    // The checkpoint table exists once the service applied the read migrations.
    let position: Option<i64> =
        sqlx::query_scalar("select position from projector_checkpoints where projector = $1")
            .bind(PROJECTOR)
            .fetch_optional(pool)
            .await?;
    Ok(position.unwrap_or(0))
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct EventRow {
    position: i64,
    event_id: Uuid,
    event_type: String,
    asset_id: Option<Uuid>,
    diff: Option<Value>,
    aggregate_version: Option<i64>,
    schema_version: Option<i16>,
}

async fn event_rows(pool: &PgPool) -> anyhow::Result<Vec<EventRow>> {
    Ok(sqlx::query_as(
        "select position, event_id, event_type, asset_id, diff, aggregate_version, schema_version
         from rm_events order by position",
    )
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct AggregateRow {
    aggregate_id: Uuid,
    aggregate_type: String,
    state: Option<Value>,
    version: i64,
    last_position: i64,
}

async fn aggregate_rows(pool: &PgPool) -> anyhow::Result<Vec<AggregateRow>> {
    Ok(sqlx::query_as(
        "select aggregate_id, aggregate_type, state, version, last_position
         from rm_aggregates order by aggregate_id",
    )
    .fetch_all(pool)
    .await?)
}

/// The current state a fold of `events` gives: what `rm_aggregates` must hold.
fn fold(events: &[EventEnvelope]) -> Vec<AggregateRow> {
    let mut states = BTreeMap::new();
    for event in events
        .iter()
        .filter(|event| event.event_type.is_state_change())
    {
        let after = event
            .payload
            .get("after")
            .filter(|after| !after.is_null())
            .cloned();
        states.insert(
            event.aggregate_id,
            AggregateRow {
                aggregate_id: event.aggregate_id,
                aggregate_type: event.aggregate_type.as_str().to_owned(),
                state: after,
                version: event.aggregate_version,
                last_position: event.position,
            },
        );
    }
    states.into_values().collect()
}

#[tokio::test]
async fn creating_updating_and_deleting_an_asset_is_recorded_in_order_with_diffs_versions_and_current_state(
) -> anyhow::Result<()> {
    // Arrange: the service starts before anything is published.
    let database = TestDatabase::create().await?;
    let relay = Relay::new().await?;
    let app = ProjectionApp::spawn(&database, &relay.nats).await?;
    let pool = connect(&database).await?;
    let mut history = History::new();
    let pump = Uuid::now_v7();
    let created = history.asset_change(
        EventType::AssetCreated,
        pump,
        Value::Null,
        motor(pump, "P-101A", 55, 1),
    );
    let updated = history.asset_change(
        EventType::AssetUpdated,
        pump,
        motor(pump, "P-101A", 55, 1),
        motor(pump, "P-101A", 75, 2),
    );
    let outcome = history.event(
        EventType::RuleExecuted,
        AggregateType::Batch,
        history.correlation_id,
        json!({ "asset_id": pump, "actions": 1 }),
    );
    let deleted = history.asset_change(
        EventType::AssetDeleted,
        pump,
        motor(pump, "P-101A", 75, 2),
        Value::Null,
    );

    // Act
    relay
        .publish(&[
            created.clone(),
            updated.clone(),
            outcome.clone(),
            deleted.clone(),
        ])
        .await?;
    wait_for_position(&pool, deleted.position).await?;

    // Assert
    let rows = event_rows(&pool).await?;
    let created_diff =
        json!([{ "op": "replace", "path": "", "value": motor(pump, "P-101A", 55, 1) }]);
    let updated_diff = json!([
        { "op": "replace", "path": "/properties/power_kw", "value": 75 },
        { "op": "replace", "path": "/version", "value": 2 },
    ]);
    let deleted_diff = json!([{ "op": "replace", "path": "", "value": null }]);
    assert_eq!(
        rows,
        [
            EventRow {
                position: 1,
                event_id: created.event_id,
                event_type: "ASSET_CREATED".into(),
                asset_id: Some(pump),
                diff: Some(created_diff),
                aggregate_version: Some(1),
                schema_version: Some(synapse_shared::event::SCHEMA_VERSION),
            },
            EventRow {
                position: 2,
                event_id: updated.event_id,
                event_type: "ASSET_UPDATED".into(),
                asset_id: Some(pump),
                diff: Some(updated_diff),
                aggregate_version: Some(2),
                schema_version: Some(synapse_shared::event::SCHEMA_VERSION),
            },
            EventRow {
                position: 3,
                event_id: outcome.event_id,
                event_type: "RULE_EXECUTED".into(),
                asset_id: Some(pump),
                diff: None,
                aggregate_version: Some(1),
                schema_version: Some(synapse_shared::event::SCHEMA_VERSION),
            },
            EventRow {
                position: 4,
                event_id: deleted.event_id,
                event_type: "ASSET_DELETED".into(),
                asset_id: Some(pump),
                diff: Some(deleted_diff),
                aggregate_version: Some(3),
                schema_version: Some(synapse_shared::event::SCHEMA_VERSION),
            },
        ]
    );
    assert_eq!(
        aggregate_rows(&pool).await?,
        [AggregateRow {
            aggregate_id: pump,
            aggregate_type: "asset".into(),
            state: None,
            version: 3,
            last_position: 4
        }]
    );
    app.stop().await
}

#[tokio::test]
async fn an_asset_that_still_exists_shows_its_latest_state_and_version() -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let relay = Relay::new().await?;
    let pool = connect(&database).await?;
    let mut history = History::new();
    let motor_id = Uuid::now_v7();
    let events = history.motor_life(motor_id, 3);
    relay.publish(&events).await?;

    // Act: the service starts after the events were published.
    let app = ProjectionApp::spawn(&database, &relay.nats).await?;
    wait_for_position(&pool, 4).await?;

    // Assert
    let aggregates = aggregate_rows(&pool).await?;
    assert_eq!(aggregates, fold(&events));
    assert_eq!(aggregates[0].version, 4);
    assert_eq!(
        aggregates[0]
            .state
            .as_ref()
            .and_then(|state| state.pointer("/properties/power_kw")),
        Some(&json!(13))
    );
    app.stop().await
}

#[tokio::test]
async fn duplicated_and_redelivered_envelopes_change_nothing() -> anyhow::Result<()> {
    // Arrange: three changes, projected once.
    let database = TestDatabase::create().await?;
    let relay = Relay::new().await?;
    let pool = connect(&database).await?;
    let mut history = History::new();
    let events = history.motor_life(Uuid::now_v7(), 2);
    relay.publish(&events).await?;
    let app = ProjectionApp::spawn(&database, &relay.nats).await?;
    wait_for_position(&pool, 3).await?;
    let events_before = event_rows(&pool).await?;
    let aggregates_before = aggregate_rows(&pool).await?;

    // Act: the stream gets the same envelopes again (a relay retry past the duplicate
    // window), then one new event that proves the duplicates were consumed...
    for event in events.iter().rev() {
        relay.publish_duplicate(event).await?;
    }
    let marker = history.event(
        EventType::BatchCompleted,
        AggregateType::Batch,
        history.correlation_id,
        json!({}),
    );
    relay.publish(std::slice::from_ref(&marker)).await?;
    wait_for_position(&pool, marker.position).await?;
    // ...and a restart whose checkpoint lost its stream sequence redelivers everything.
    app.stop().await?;
    sqlx::query("update projector_checkpoints set stream_sequence = 0 where projector = $1")
        .bind(PROJECTOR)
        .execute(&pool)
        .await?;
    let app = ProjectionApp::spawn(&database, &relay.nats).await?;
    let stream_length = 2 * events.len() as i64 + 1;
    wait_for_stream_sequence(&pool, stream_length).await?;

    // Assert
    let events_after = event_rows(&pool).await?;
    assert_eq!(events_after.len(), events_before.len() + 1);
    assert_eq!(events_after[..events_before.len()], events_before[..]);
    assert_eq!(aggregate_rows(&pool).await?, aggregates_before);
    assert_eq!(checkpoint_position(&pool).await?, marker.position);
    app.stop().await
}

async fn wait_for_stream_sequence(pool: &PgPool, sequence: i64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let consumed: Option<i64> = sqlx::query_scalar(
            "select stream_sequence from projector_checkpoints where projector = $1",
        )
        .bind(PROJECTOR)
        .fetch_optional(pool)
        .await?;
        if consumed.unwrap_or(0) >= sequence {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the projector consumed up to {consumed:?}, not {sequence}, in {PATIENCE:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_restarted_service_resumes_from_its_checkpoint_and_applies_each_event_once(
) -> anyhow::Result<()> {
    // Arrange: many motors, enough events that the first run is stopped mid-stream.
    let database = TestDatabase::create().await?;
    let relay = Relay::new().await?;
    let pool = connect(&database).await?;
    let all = motor_lives(100);
    let (early, late) = all.split_at(all.len() / 2);
    relay.publish(early).await?;
    let first_run = ProjectionApp::spawn(&database, &relay.nats).await?;

    // Act: stop the first run as soon as it made progress, publish the rest while it is
    // down, then start a second run on the same database.
    wait_for_position(&pool, 1).await?;
    first_run.stop().await?;
    let stopped_at = checkpoint_position(&pool).await?;
    relay.publish(late).await?;
    let second_run = ProjectionApp::spawn(&database, &relay.nats).await?;
    let last = all.last().map_or(0, |event| event.position);
    wait_for_position(&pool, last).await?;

    // Assert
    assert!(
        stopped_at < last,
        "the first run must stop before the end of the stream"
    );
    assert_projected_once(&pool, &all).await?;
    second_run.stop().await
}

/// The events of `motors` motors, each created and re-rated 9 times.
fn motor_lives(motors: usize) -> Vec<EventEnvelope> {
    let mut history = History::new();
    (0..motors)
        .flat_map(|_| history.motor_life(Uuid::now_v7(), 9))
        .collect()
}

/// Every one of `all` is in `rm_events` once, in order, and `rm_aggregates` is their
/// fold.
async fn assert_projected_once(pool: &PgPool, all: &[EventEnvelope]) -> anyhow::Result<()> {
    let positions: Vec<i64> = event_rows(pool)
        .await?
        .iter()
        .map(|row| row.position)
        .collect();
    let expected: Vec<i64> = all.iter().map(|event| event.position).collect();
    assert_eq!(positions, expected);
    assert_eq!(aggregate_rows(pool).await?, fold(all));
    Ok(())
}

/// How many sessions hold the projection's lease on the test's database.
async fn lease_holders(pool: &PgPool) -> anyhow::Result<i64> {
    let key = projection_service::leadership::KEY;
    Ok(sqlx::query_scalar(
        "select count(*) from pg_locks
         where locktype = 'advisory' and granted and objsubid = 1
           and classid::int8 = $1 and objid::int8 = $2
           and database = (select oid from pg_database where datname = current_database())",
    )
    .bind(key >> 32)
    .bind(key & 0xffff_ffff)
    .fetch_one(pool)
    .await?)
}

#[tokio::test]
async fn of_two_replicas_one_applies_and_the_other_takes_over_when_it_stops() -> anyhow::Result<()>
{
    // Arrange: one replica applying, then a second beside it, on one database and stream.
    let database = TestDatabase::create().await?;
    let relay = Relay::new().await?;
    let pool = connect(&database).await?;
    let all = motor_lives(400);
    let (early, late) = all.split_at(all.len() / 2);
    let first = ProjectionApp::spawn(&database, &relay.nats).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while lease_holders(&pool).await? == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let second = ProjectionApp::spawn(&database, &relay.nats).await?;

    // Act: half the events with both running; the first stops; the rest.
    relay.publish(early).await?;
    wait_for_position(&pool, early.last().map_or(0, |event| event.position)).await?;
    let holders_with_two = lease_holders(&pool).await?;
    first.stop().await?;
    relay.publish(late).await?;
    wait_for_position(&pool, all.last().map_or(0, |event| event.position)).await?;

    // Assert: one replica applied at a time (before: both did, and two replicas
    // stopped each other for good within a batch of a few thousand events), the
    // second took over, and every event is in the read models once.
    assert_eq!(holders_with_two, 1);
    assert_eq!(lease_holders(&pool).await?, 1);
    assert_projected_once(&pool, &all).await?;
    second.stop().await
}

#[tokio::test]
async fn the_service_reports_health_readiness_and_projector_lag() -> anyhow::Result<()> {
    // Arrange
    let database = TestDatabase::create().await?;
    let relay = Relay::new().await?;
    let pool = connect(&database).await?;
    let mut history = History::new();
    let events = history.motor_life(Uuid::now_v7(), 1);
    relay.publish(&events).await?;
    let app = ProjectionApp::spawn(&database, &relay.nats).await?;
    wait_for_position(&pool, 2).await?;
    let http = reqwest::Client::new();

    // Act
    let health = http.get(app.url("/healthz")).send().await?;
    let ready = http.get(app.url("/readyz")).send().await?;
    let caught_up = format!("stream=\"{}\"", relay.nats.args.nats_stream);
    let ours = format!("projector=\"{PROJECTOR}\"");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let metrics = loop {
        let metrics = http.get(app.url("/metrics")).send().await?.text().await?;
        let lag_reported = metrics.lines().any(|line| {
            line.starts_with("synapse_projector_lag_events")
                && line.contains(&caught_up)
                && line.contains(&ours)
                && line.ends_with(" 0")
        });
        if lag_reported || tokio::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Assert
    assert_eq!(health.status(), 200);
    assert_eq!(ready.status(), 200);
    let gauge = |name: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with(name) && line.contains(&caught_up) && line.contains(&ours)
            })
            .map(|line| line.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    assert_eq!(gauge("synapse_projector_position").as_deref(), Some("2"));
    assert_eq!(gauge("synapse_projector_lag_events").as_deref(), Some("0"));
    assert_eq!(gauge("synapse_projector_lag_seconds").as_deref(), Some("0"));
    app.stop().await
}
