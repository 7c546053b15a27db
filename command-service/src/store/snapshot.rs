//! Pre-batch snapshots: the state of an aggregate before a batch first touched it,
//! written in the same transaction as the change. Rollback restores from these.
//!
//! Executions, imports and single changes snapshot only aggregates that existed: one
//! they create has no pre-batch state, and its `*_CREATED` event says so (rollback
//! deletes it). Half the snapshot rows of an execution that gives every large motor
//! a new cable, and all of an import of a new plant, were such empty states. A
//! rollback batch snapshots everything it touches, the ones it recreates included.

use serde_json::Value;
use sqlx::PgConnection;
use synapse_shared::AggregateType;
use uuid::Uuid;

/// Remember `state` at `version` as the pre-batch state of an existing aggregate,
/// unless the batch already has a snapshot of it.
pub async fn take(
    connection: &mut PgConnection,
    correlation_id: Uuid,
    aggregate_type: AggregateType,
    aggregate_id: Uuid,
    state: &Value,
    version: i64,
) -> Result<(), sqlx::Error> {
    let snapshot = Snapshot::new(aggregate_type, aggregate_id, Some(state), version);
    take_many(connection, correlation_id, std::slice::from_ref(&snapshot)).await
}

/// The states `correlation_id` snapshotted of `aggregate_ids`, in that order: `None`
/// where it took none, or snapshotted a state of nothing (an aggregate that did not
/// exist).
pub async fn read_many(
    connection: &mut PgConnection,
    correlation_id: Uuid,
    aggregate_ids: &[Uuid],
) -> Result<Vec<Option<Value>>, sqlx::Error> {
    let rows: Vec<(Option<Value>,)> = sqlx::query_as(
        "select s.state from unnest($2::uuid[]) with ordinality as t(aggregate_id, ordinal)
         left join execution_snapshots s
             on s.correlation_id = $1 and s.aggregate_id = t.aggregate_id
         order by t.ordinal",
    )
    .bind(correlation_id)
    .bind(aggregate_ids)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(state,)| state.filter(|state| !state.is_null()))
        .collect())
}

/// One pre-batch state to remember, its JSON already written out: snapshots are built
/// before the transaction that stores them opens, so serializing them is not part of
/// the time the transaction holds its locks.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub aggregate_type: AggregateType,
    pub aggregate_id: Uuid,
    state: Option<String>,
    pub version: i64,
}

impl Snapshot {
    pub fn new(
        aggregate_type: AggregateType,
        aggregate_id: Uuid,
        state: Option<&Value>,
        version: i64,
    ) -> Self {
        Self {
            aggregate_type,
            aggregate_id,
            state: state.map(Value::to_string),
            version,
        }
    }
}

/// [`take`] for many aggregates in one statement; the first snapshot of an aggregate
/// in the list (and in the batch) wins.
pub async fn take_many(
    connection: &mut PgConnection,
    correlation_id: Uuid,
    snapshots: &[Snapshot],
) -> Result<(), sqlx::Error> {
    if snapshots.is_empty() {
        return Ok(());
    }
    // The states go as text and become `json` in the database: `json` input only
    // checks the text, and the column keeps it as it is.
    sqlx::query(
        "insert into execution_snapshots (correlation_id, aggregate_type, aggregate_id, state, version)
         select $1, aggregate_type, aggregate_id, state, version
         from unnest($2::text[], $3::uuid[], $4::text[]::json[], $5::int8[]) with ordinality
             as s(aggregate_type, aggregate_id, state, version, ordinal)
         order by ordinal
         on conflict (correlation_id, aggregate_id) do nothing",
    )
    .bind(correlation_id)
    .bind(snapshots.iter().map(|s| s.aggregate_type.as_str()).collect::<Vec<_>>())
    .bind(snapshots.iter().map(|s| s.aggregate_id).collect::<Vec<_>>())
    .bind(snapshots.iter().map(|s| s.state.as_deref()).collect::<Vec<_>>())
    .bind(snapshots.iter().map(|s| s.version).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}
