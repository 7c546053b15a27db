//! `rm_disciplines` and `rm_discipline_batches`: activity per discipline.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// A discipline as the read models hold it, or why `discipline` cannot be one.
/// Disciplines are codes the command side stores upper-cased, so `electrical` asks
/// for `ELECTRICAL`, and `E/I` or ` ELECTRICAL` (which no event can have) is refused
/// rather than answered with nothing; every filter by discipline, over HTTP and on the
/// live feed, goes through here so that they all select the same events.
pub fn code(discipline: &str) -> Result<String, String> {
    if synapse_shared::domain::is_code(discipline) {
        Ok(discipline.to_ascii_uppercase())
    } else {
        Err(format!(
            "`discipline` is a discipline code such as `ELECTRICAL`: it {}",
            synapse_shared::domain::CODE_FORMAT
        ))
    }
}

/// How many events of one type a discipline has.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TypeCountRow {
    pub discipline: String,
    pub event_type: String,
    pub count: i64,
    pub last_at: DateTime<Utc>,
}

/// A discipline's activity in one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DisciplineBatchRow {
    pub correlation_id: Uuid,
    /// Events of the discipline in the batch.
    pub events: i64,
    /// RULE_ERROR events of the discipline in the batch.
    pub errors: i64,
    /// When the discipline's last event in the batch occurred.
    pub last_at: DateTime<Utc>,
}

/// Event counts by type of every discipline (or only `discipline`), ordered by
/// discipline then event type.
pub async fn type_counts(
    connection: &mut PgConnection,
    discipline: Option<&str>,
) -> Result<Vec<TypeCountRow>, sqlx::Error> {
    sqlx::query_as(
        "select discipline, event_type, count, last_at from rm_disciplines
         where $1::text is null or discipline = $1
         order by discipline, event_type",
    )
    .bind(discipline)
    .fetch_all(connection)
    .await
}

/// How many batches each discipline (or only `discipline`) took part in.
pub async fn batch_counts(
    connection: &mut PgConnection,
    discipline: Option<&str>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select discipline, count(*) from rm_discipline_batches
         where $1::text is null or discipline = $1
         group by discipline order by discipline",
    )
    .bind(discipline)
    .fetch_all(connection)
    .await
}

/// The discipline's `limit` most recently active batches, newest first.
pub async fn recent_batches(
    connection: &mut PgConnection,
    discipline: &str,
    limit: i64,
) -> Result<Vec<DisciplineBatchRow>, sqlx::Error> {
    sqlx::query_as(
        "select correlation_id, events, errors, last_at from rm_discipline_batches
         where discipline = $1
         order by last_position desc
         limit $2",
    )
    .bind(discipline)
    .bind(limit)
    .fetch_all(connection)
    .await
}
