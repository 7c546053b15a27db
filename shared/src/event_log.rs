//! Reading the event log in position order: the relay follows it to publish, and a
//! read-model rebuild folds it. Only the command service writes the log.

use crate::event::{AggregateType, EventEnvelope, EventType};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct LogRow {
    position: i64,
    event_id: Uuid,
    event_type: String,
    aggregate_type: String,
    aggregate_id: Uuid,
    aggregate_version: i64,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    rule_id: Option<Uuid>,
    rule_version: Option<i32>,
    discipline: Option<String>,
    actor: String,
    occurred_at: chrono::DateTime<chrono::Utc>,
    schema_version: i16,
    /// The `jsonb` as text: parsed only when an [`EventEnvelope`] is wanted.
    payload: String,
}

/// Why a log row could not be read as an envelope.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event at position {position} is corrupt: {reason}")]
    Corrupt { position: i64, reason: String },
}

impl TryFrom<StoredEvent> for EventEnvelope {
    type Error = ReadError;

    fn try_from(stored: StoredEvent) -> Result<Self, Self::Error> {
        let payload =
            serde_json::from_str(&stored.payload).map_err(|error| ReadError::Corrupt {
                position: stored.envelope.position,
                reason: error.to_string(),
            })?;
        Ok(EventEnvelope {
            payload,
            ..stored.envelope
        })
    }
}

/// An event as read from the log with its payload left as the JSON text Postgres
/// returned: what the relay publishes, without parsing and re-serializing every
/// payload. [`StoredEvent::body`] is the JSON of the [`EventEnvelope`], with the
/// payload as Postgres prints it (same value; `jsonb` spacing and key order).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Every field but the payload, which is `null` here.
    pub envelope: EventEnvelope,
    /// The payload's JSON text.
    pub payload: String,
}

impl StoredEvent {
    /// The message body: the envelope's JSON, payload included. The payload is the
    /// envelope's last field, so its text goes where the closing brace was.
    pub fn body(&self) -> serde_json::Result<Vec<u8>> {
        let envelope = &self.envelope;
        let mut body = serde_json::to_vec(&Head {
            event_id: envelope.event_id,
            position: envelope.position,
            event_type: envelope.event_type,
            aggregate_type: envelope.aggregate_type,
            aggregate_id: envelope.aggregate_id,
            aggregate_version: envelope.aggregate_version,
            correlation_id: envelope.correlation_id,
            causation_id: envelope.causation_id,
            rule_id: envelope.rule_id,
            rule_version: envelope.rule_version,
            discipline: envelope.discipline.as_deref(),
            actor: &envelope.actor,
            occurred_at: envelope.occurred_at,
            schema_version: envelope.schema_version,
        })?;
        body.pop();
        body.reserve(self.payload.len() + 12);
        body.extend_from_slice(b",\"payload\":");
        body.extend_from_slice(self.payload.as_bytes());
        body.push(b'}');
        Ok(body)
    }
}

/// [`EventEnvelope`]'s wire shape without the payload, field for field and in the same
/// order (a test holds the two equal).
#[derive(Serialize)]
struct Head<'a> {
    event_id: Uuid,
    position: i64,
    event_type: EventType,
    aggregate_type: AggregateType,
    aggregate_id: Uuid,
    aggregate_version: i64,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    rule_id: Option<Uuid>,
    rule_version: Option<i32>,
    discipline: Option<&'a str>,
    actor: &'a str,
    occurred_at: chrono::DateTime<chrono::Utc>,
    schema_version: i16,
}

impl TryFrom<LogRow> for StoredEvent {
    type Error = ReadError;

    fn try_from(row: LogRow) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| ReadError::Corrupt {
            position: row.position,
            reason,
        };
        let envelope = EventEnvelope {
            event_id: row.event_id,
            position: row.position,
            event_type: row
                .event_type
                .parse::<EventType>()
                .map_err(|e| corrupt(e.to_string()))?,
            aggregate_type: row
                .aggregate_type
                .parse::<AggregateType>()
                .map_err(|e| corrupt(e.to_string()))?,
            aggregate_id: row.aggregate_id,
            aggregate_version: row.aggregate_version,
            correlation_id: row.correlation_id,
            causation_id: row.causation_id,
            rule_id: row.rule_id,
            rule_version: row.rule_version,
            discipline: row.discipline,
            actor: row.actor,
            occurred_at: row.occurred_at,
            schema_version: row.schema_version,
            payload: Value::Null,
        };
        Ok(StoredEvent {
            envelope,
            payload: row.payload,
        })
    }
}

/// Up to `limit` events with a position above `after`, in position order. Safe to
/// follow: appends are serialized, so no event can later appear below a position that
/// was already visible.
pub async fn read_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<EventEnvelope>, ReadError> {
    read_stored_after(pool, after, limit)
        .await?
        .into_iter()
        .map(EventEnvelope::try_from)
        .collect()
}

/// [`read_after`] with the payloads left as JSON text, for publishing.
pub async fn read_stored_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, ReadError> {
    let rows: Vec<LogRow> = sqlx::query_as(
        "select position, event_id, event_type, aggregate_type, aggregate_id, aggregate_version,
             correlation_id, causation_id, rule_id, rule_version, discipline, actor, occurred_at,
             schema_version, payload::text as payload
         from workflow_events where position > $1 order by position limit $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(StoredEvent::try_from).collect()
}

/// The highest position in the log (0 when empty).
pub async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (head,): (Option<i64>,) = sqlx::query_as("select max(position) from workflow_events")
        .fetch_one(pool)
        .await?;
    Ok(head.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stored_event_body_is_the_envelope_json_byte_for_byte() {
        let payload = json!({"before": null, "after": {"tag": "M-1", "kw": 75.5, "x": [1, "=A1"]}});
        let envelope = EventEnvelope {
            event_id: Uuid::now_v7(),
            position: 42,
            event_type: EventType::AssetCreated,
            aggregate_type: AggregateType::Asset,
            aggregate_id: Uuid::now_v7(),
            aggregate_version: 1,
            correlation_id: Uuid::now_v7(),
            causation_id: Some(Uuid::now_v7()),
            rule_id: None,
            rule_version: Some(3),
            discipline: Some("ELECTRICAL".into()),
            actor: "ana \"the engineer\"".into(),
            occurred_at: chrono::Utc::now(),
            schema_version: 1,
            payload: payload.clone(),
        };
        let stored = StoredEvent {
            envelope: EventEnvelope {
                payload: Value::Null,
                ..envelope.clone()
            },
            payload: payload.to_string(),
        };
        assert_eq!(
            stored.body().unwrap(),
            serde_json::to_vec(&envelope).unwrap()
        );
        let parsed: EventEnvelope = serde_json::from_slice(&stored.body().unwrap()).unwrap();
        assert_eq!(parsed, envelope);
    }
}
