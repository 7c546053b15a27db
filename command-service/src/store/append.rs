//! Appending events to `workflow_events`.

use sqlx::types::Json;
use sqlx::PgConnection;
use synapse_shared::event::SCHEMA_VERSION;
use synapse_shared::{EventEnvelope, NewEvent};
use uuid::Uuid;

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended the same aggregate version first: the caller's view of
    /// the aggregate was stale (optimistic concurrency).
    #[error("aggregate {aggregate_id:?} was changed concurrently")]
    VersionConflict { aggregate_id: Option<Uuid> },
    /// The batch being written is no longer running: another replica's sweep marked it
    /// failed (this executor stalled past the heartbeat), or it was rolled back since.
    /// Nothing more may be written in its name.
    #[error(
        "batch {0} was ended elsewhere while this executor ran (marked failed for want of \
         a heartbeat, or rolled back); nothing more is written in its name"
    )]
    BatchEnded(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Append `events` in order, in the caller's transaction, and return them with the
/// positions the log gave them. Call it as the last write of the transaction: the
/// statement takes the log's append lock, which is held until commit.
pub async fn append(
    connection: &mut PgConnection,
    events: Vec<NewEvent>,
) -> Result<Vec<EventEnvelope>, AppendError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut columns = Columns::with_capacity(events.len());
    for event in &events {
        columns.push(event);
    }
    // One statement for the whole set: `with ordinality` keeps the given order, so
    // positions (drawn in insertion order) follow the order of `events`.
    let positions: Vec<(i64,)> = sqlx::query_as(
        "insert into workflow_events (event_id, event_type, aggregate_type, aggregate_id,
             aggregate_version, correlation_id, causation_id, rule_id, rule_version,
             discipline, actor, occurred_at, schema_version, payload)
         select event_id, event_type, aggregate_type, aggregate_id, aggregate_version,
             correlation_id, causation_id, rule_id, rule_version, discipline, actor,
             occurred_at, $13, payload
         from unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::int8[], $6::uuid[],
             $7::uuid[], $8::uuid[], $9::int4[], $10::text[], $11::text[], $12::timestamptz[],
             $14::jsonb[])
             with ordinality as e(event_id, event_type, aggregate_type, aggregate_id,
                 aggregate_version, correlation_id, causation_id, rule_id, rule_version,
                 discipline, actor, occurred_at, payload, ordinal)
         order by ordinal
         returning position",
    )
    .bind(&columns.event_id)
    .bind(&columns.event_type)
    .bind(&columns.aggregate_type)
    .bind(&columns.aggregate_id)
    .bind(&columns.aggregate_version)
    .bind(&columns.correlation_id)
    .bind(&columns.causation_id)
    .bind(&columns.rule_id)
    .bind(&columns.rule_version)
    .bind(&columns.discipline)
    .bind(&columns.actor)
    .bind(&columns.occurred_at)
    .bind(SCHEMA_VERSION)
    .bind(&columns.payload)
    .fetch_all(&mut *connection)
    .await
    .map_err(|error| classify(error, &events))?;

    let mut positions: Vec<i64> = positions.into_iter().map(|(position,)| position).collect();
    // `returning` does not promise an order; positions were drawn in insertion order,
    // which is the order of `events`.
    positions.sort_unstable();
    record_appended(positions.len());
    Ok(events
        .into_iter()
        .zip(positions)
        .map(|(event, position)| event.into_envelope(position))
        .collect())
}

/// `synapse_events_appended_total`: the append rate is its `rate()`. Counted when the
/// insert succeeds, which is just before the commit (appends come last): a transaction
/// that then fails to commit (Postgres gone at that moment) is counted although its
/// events never became visible, so the counter can only over-count, and only then.
fn record_appended(count: usize) {
    metrics::counter!("synapse_events_appended_total").increment(count as u64);
}

fn classify(error: sqlx::Error, events: &[NewEvent]) -> AppendError {
    let conflict = error
        .as_database_error()
        .and_then(|database_error| database_error.constraint())
        == Some("workflow_events_aggregate_version_key");
    if conflict {
        let aggregate_id = events.first().map(|event| event.aggregate_id);
        AppendError::VersionConflict { aggregate_id }
    } else {
        AppendError::Database(error)
    }
}

/// The events as column arrays, for one `unnest` insert, borrowed from the events
/// (payloads are serialized straight from them, never copied).
struct Columns<'a> {
    event_id: Vec<Uuid>,
    event_type: Vec<&'static str>,
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<Uuid>,
    aggregate_version: Vec<i64>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Option<Uuid>>,
    rule_id: Vec<Option<Uuid>>,
    rule_version: Vec<Option<i32>>,
    discipline: Vec<Option<&'a str>>,
    actor: Vec<&'a str>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    payload: Vec<Json<&'a serde_json::Value>>,
}

impl<'a> Columns<'a> {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            event_id: Vec::with_capacity(capacity),
            event_type: Vec::with_capacity(capacity),
            aggregate_type: Vec::with_capacity(capacity),
            aggregate_id: Vec::with_capacity(capacity),
            aggregate_version: Vec::with_capacity(capacity),
            correlation_id: Vec::with_capacity(capacity),
            causation_id: Vec::with_capacity(capacity),
            rule_id: Vec::with_capacity(capacity),
            rule_version: Vec::with_capacity(capacity),
            discipline: Vec::with_capacity(capacity),
            actor: Vec::with_capacity(capacity),
            occurred_at: Vec::with_capacity(capacity),
            payload: Vec::with_capacity(capacity),
        }
    }

    fn push(&mut self, event: &'a NewEvent) {
        self.event_id.push(event.event_id);
        self.event_type.push(event.event_type.as_str());
        self.aggregate_type.push(event.aggregate_type.as_str());
        self.aggregate_id.push(event.aggregate_id);
        self.aggregate_version.push(event.aggregate_version);
        self.correlation_id.push(event.correlation_id);
        self.causation_id.push(event.causation_id);
        self.rule_id.push(event.rule_id);
        self.rule_version.push(event.rule_version);
        self.discipline.push(event.discipline.as_deref());
        self.actor.push(&event.actor);
        self.occurred_at.push(event.occurred_at);
        self.payload.push(Json(&event.payload));
    }
}
