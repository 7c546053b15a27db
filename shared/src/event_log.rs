//! Reading the event log in position order: the relay follows it to publish, and a
//! read-model rebuild folds it. Only the command service writes the log.

use crate::event::{AggregateType, EventEnvelope, EventType};
use sqlx::types::Json;
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
    payload: Json<serde_json::Value>,
}

/// Why a log row could not be read as an envelope.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event at position {position} is corrupt: {reason}")]
    Corrupt { position: i64, reason: String },
}

impl TryFrom<LogRow> for EventEnvelope {
    type Error = ReadError;

    fn try_from(row: LogRow) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| ReadError::Corrupt {
            position: row.position,
            reason,
        };
        Ok(EventEnvelope {
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
            payload: row.payload.0,
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
    let rows: Vec<LogRow> = sqlx::query_as(
        "select position, event_id, event_type, aggregate_type, aggregate_id, aggregate_version,
             correlation_id, causation_id, rule_id, rule_version, discipline, actor, occurred_at,
             schema_version, payload
         from workflow_events where position > $1 order by position limit $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(EventEnvelope::try_from).collect()
}

/// The highest position in the log (0 when empty).
pub async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (head,): (Option<i64>,) = sqlx::query_as("select max(position) from workflow_events")
        .fetch_one(pool)
        .await?;
    Ok(head.unwrap_or(0))
}
